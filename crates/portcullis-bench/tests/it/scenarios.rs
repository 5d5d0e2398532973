//! Scenario files: weighted requests with templated variables, checks, think time, presets,
//! and errors that name the file, key and line.

use std::collections::BTreeMap;

use portcullis_bench::{Model, plan};
use portcullis_test_support::{TestUpstream, full};

use crate::{bench_error, parse, report};

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_requests_fill_their_templates_once_per_request() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let text = r#"name = "shop"
base_url = "BASE"

[[stages]]
duration = "30s"
users = 4

[vars]
sku = { list = ["a1", "b2", 3] }
user = { range = [10, 20] }

[[requests]]
name = "product"
weight = 3
url = "/products/{{sku}}?user={{user}}"
headers = { "x-user" = "{{user}}" }

[[requests]]
name = "order"
method = "POST"
url = "/orders"
body = '{"sku": "{{sku}}"}'
"#;
    let file = write(&dir, &text.replace("BASE", &up.url()));
    let r = report(&["--scenario", &file, "-n", "800"]).await;
    assert_eq!(r.name, "shop");
    assert_eq!(r.requests.len(), 2);
    let seen = up.requests();
    assert_eq!(seen.len(), 800);
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &seen {
        let path = s.uri.path();
        if let Some(sku) = path.strip_prefix("/products/") {
            *per_kind.entry("product").or_default() += 1;
            assert!(["a1", "b2", "3"].contains(&sku), "{path}");
            let user = s.uri.query().unwrap().strip_prefix("user=").unwrap();
            let n: u32 = user.parse().unwrap();
            assert!((10..=20).contains(&n));
            assert_eq!(s.headers["x-user"], user, "one draw per request");
        } else {
            assert_eq!((s.method.as_str(), path), ("POST", "/orders"));
            // `{"sku": "a1"}` or `{"sku": "3"}`: single braces are literal.
            let len = s.headers["content-length"].to_str().unwrap();
            assert!(len == "13" || len == "12", "{len}");
            *per_kind.entry("order").or_default() += 1;
        }
    }
    // 3:1 weights over 800 requests: 600 expected, a wide margin for chance (σ ≈ 12).
    let products = per_kind["product"];
    assert!((540..=660).contains(&products), "{per_kind:?}");
    assert_eq!(r.requests[0].requests as usize, products);
}

#[tokio::test]
async fn checks_count_passes_and_failures_per_check() {
    let up = TestUpstream::respond(|req| {
        let (status, body) = if req.uri().path() == "/missing" {
            (404, "nope")
        } else {
            (200, "hello world")
        };
        http::Response::builder()
            .status(status)
            .header("x-version", "1")
            .body(full(body))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        &format!(
            "base_url = \"{}\"\nthresholds = [\"checks > 99%\"]\n\n[[stages]]\nduration = \"30s\"\nusers = 1\n\n\
             [[requests]]\nname = \"home\"\nurl = \"/\"\nchecks = {{ status = 200, header = \"x-version\", body_contains = \"world\" }}\n\n\
             [[requests]]\nname = \"missing\"\nurl = \"/missing\"\nchecks = {{ status = [200, 204] }}\n",
            up.url()
        ),
    );
    let out = crate::bench(&["--scenario", &file, "-n", "100"]).await;
    let r = out.report.unwrap();
    let home = &r.requests[0];
    assert_eq!(home.checks.len(), 3);
    assert!(
        home.checks
            .iter()
            .all(|c| c.failed == 0 && c.passed == home.responses)
    );
    let missing = &r.requests[1];
    assert_eq!(missing.checks[0].check, "status in [200, 204]");
    assert_eq!(
        (missing.checks[0].passed, missing.checks[0].failed),
        (0, missing.responses)
    );
    assert!(!r.thresholds[0].passed);
    assert!(
        out.summary.contains("FAIL missing: status in [200, 204]"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn think_time_paces_each_user() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        &format!(
            "base_url = \"{}\"\nthink_time = \"100ms\"\n\n[[stages]]\nduration = \"1s\"\nusers = 2\n\n[[requests]]\nurl = \"/\"\n",
            up.url()
        ),
    );
    let r = report(&["--scenario", &file]).await;
    // Two users, each at most one request per 100 ms for 1 s.
    assert!(
        (6..=22).contains(&r.overall.requests),
        "{}",
        r.overall.requests
    );
}

#[test]
fn presets_scale_to_the_peak_and_duration() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "base_url = \"http://127.0.0.1:1\"\npreset = \"stress\"\npeak_rate = 100\nduration = \"10m\"\n\n[[requests]]\nurl = \"/\"\n",
    );
    let p = plan(&parse(&["--scenario", &file]).unwrap().run).unwrap();
    assert_eq!(p.model, Model::Open);
    assert_eq!(p.profile.duration().as_secs(), 600);
    assert!(
        (p.profile.peak() - 200.0).abs() < 1e-9,
        "stress goes to twice the peak"
    );

    let p = plan(
        &parse(&[
            "http://127.0.0.1:1/",
            "--preset",
            "spike",
            "-c",
            "40",
            "-d",
            "1m",
        ])
        .unwrap()
        .run,
    )
    .unwrap();
    assert_eq!(p.model, Model::Closed);
    assert_eq!(p.workers(), 40);
    assert!(
        (p.profile.level_at(10.0) - 4.0).abs() < 1e-9,
        "spike holds 10% of the peak first"
    );
    assert!(
        (p.profile.level_at(25.0) - 40.0).abs() < 1e-9,
        "then jumps to the peak"
    );
}

#[tokio::test]
async fn scenario_errors_name_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = "base_url = \"http://127.0.0.1:1\"\n";
    let cases: &[(&str, &[&str])] = &[
        (
            "[[stages]]\nduration = \"1s\"\nusers = 1\nramp = true\n\n[[requests]]\nurl = \"/\"\n",
            &["unknown field `ramp`", "line 5"],
        ),
        (
            "[[stages]]\nduration = \"1 minute\"\nusers = 1\n\n[[requests]]\nurl = \"/\"\n",
            &["line 3", "unknown unit"],
        ),
        (
            "[[stages]]\nduration = \"1s\"\nusers = 1\n\n[[stages]]\nduration = \"1s\"\nusers = 1\nrate = 5\n\n[[requests]]\nurl = \"/\"\n",
            &["line 6", "stages[1]", "exactly one of rate"],
        ),
        (
            "thresholds = [\"p95 < soon\"]\n[[stages]]\nduration = \"1s\"\nusers = 1\n\n[[requests]]\nurl = \"/\"\n",
            &["line 2", "threshold \"p95 < soon\""],
        ),
        (
            "[[stages]]\nduration = \"1s\"\nusers = 1\n\n[[requests]]\nname = \"a\"\nurl = \"/{{who}}\"\n",
            &["line 6", "requests[0].url", "unknown variable {{who}}"],
        ),
        ("[[requests]]\nurl = \"/\"\n", &["no load"]),
        (
            "think_time = \"1s\"\n[[stages]]\nduration = \"1s\"\nrate = 1\n\n[[requests]]\nurl = \"/\"\n",
            &["think time applies to users"],
        ),
    ];
    for (text, wants) in cases {
        let file = write(&dir, &format!("{base}{text}"));
        let err = bench_error(&["--scenario", &file]).await;
        assert!(err.starts_with(&file), "{err}");
        for want in *wants {
            assert!(err.contains(want), "want {want:?} in:\n{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_fill_several_placeholders_from_the_same_row() {
    let up = TestUpstream::respond(|_| http::Response::new(full("ok"))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("email,password,\"display name\"\n");
    for i in 0..20 {
        csv.push_str(&format!("user{i}@example.com,pw-{i},\"User {i}, Jr.\"\n"));
    }
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    let text = format!(
        "base_url = \"{}\"\n\n[[stages]]\nduration = \"10ms\"\nusers = 4\n\n\
         [[stages]]\nduration = \"30s\"\nusers = 4\n\n\
         [vars]\nuser = {{ csv = \"users.csv\" }}\n\n\
         [[requests]]\nname = \"login\"\nmethod = \"POST\"\nurl = \"/login?as={{{{user.email}}}}\"\n\
         headers = {{ \"x-password\" = \"{{{{user.password}}}}\", \"x-name\" = \"{{{{user.display name}}}}\" }}\n",
        up.url()
    );
    let file = write(&dir, &text);
    let r = report(&["--scenario", &file, "-n", "200"]).await;
    assert_eq!(r.overall.responses, 200);
    let mut users = std::collections::HashSet::new();
    for s in up.requests() {
        let email = s
            .uri
            .query()
            .unwrap()
            .strip_prefix("as=")
            .unwrap()
            .to_owned();
        let i = email
            .strip_prefix("user")
            .and_then(|e| e.strip_suffix("@example.com"))
            .unwrap();
        assert_eq!(
            s.headers["x-password"],
            format!("pw-{i}").as_str(),
            "same row"
        );
        assert_eq!(
            s.headers["x-name"],
            format!("User {i}, Jr.").as_str(),
            "quoted field"
        );
        users.insert(email);
    }
    assert!(
        users.len() > 10,
        "rows drawn across the file: {}",
        users.len()
    );
}

#[tokio::test]
async fn bad_csv_files_are_reported_with_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ragged.csv"), "a,b\n1,2\n3\n").unwrap();
    std::fs::write(dir.path().join("empty.csv"), "a,b\n").unwrap();
    for (csv, why) in [
        ("ragged.csv", "line 3: 1 fields where the header line has 2"),
        ("empty.csv", "no rows after the header line"),
        ("missing.csv", "missing.csv"),
    ] {
        let file = write(
            &dir,
            &format!(
                "base_url = \"http://127.0.0.1:9\"\n\n[vars]\nrow = {{ csv = \"{csv}\" }}\n\n\
                 [[requests]]\nurl = \"/{{{{row.a}}}}\"\n"
            ),
        );
        let err = bench_error(&["--scenario", &file]).await;
        assert!(err.contains("vars.row") && err.contains("line 4"), "{err}");
        assert!(err.contains(why), "{err}");
    }
}
