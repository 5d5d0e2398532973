//! The real `portcullis` binary: `check` diagnostics, graceful shutdown on SIGTERM, and bounded
//! memory while 10 MiB bodies stream through it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Channel, Full};
use portcullis_test_support::{Client, TestBody, TestUpstream, echo, full};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn check(text: &str) -> (i32, String) {
    let (_dir, path) = write_config(text);
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn check_accepts_the_quickstart_example() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.toml"
    );
    let out = Command::new(BIN)
        .args(["check", "--config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 upstreams, 3 routes)"));
}

#[test]
fn check_accepts_every_example() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(BIN)
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "quickstart, redis, redis-cluster, security");
}

#[test]
fn check_names_file_line_column_and_key_of_an_unknown_key_with_a_suggestion() {
    let (code, err) = check("[server]\nlisten = \"127.0.0.1:0\"\ndrain_timout = \"5s\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("FILE:3:1: key `server.drain_timout`: unknown field `drain_timout`"),
        "{err}"
    );
    assert!(err.contains("did you mean `drain_timeout`?"), "{err}");
    assert!(err.contains("3 | drain_timout = \"5s\""), "{err}");
}

#[test]
fn check_reports_every_semantic_error_with_its_location() {
    let text = "\
[[upstreams]]
name = \"api\"
targets = [{ url = \"http://127.0.0.1:3000\" }]

[[routes]]
name = \"a\"
upstream = \"apii\"

[[routes]]
name = \"b\"
upstream = \"api\"
match = { host = \"bad host\", path = \"/p/x{id}\" }
";
    let (code, err) = check(text);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "FILE:7:12: key `routes[0].upstream`: unknown upstream \"apii\"; did you mean \"api\"?"
        ),
        "{err}"
    );
    assert!(
        err.contains("FILE:12:18: key `routes[1].match.host`: invalid host \"bad host\""),
        "{err}"
    );
    assert!(err.contains("FILE:12:37: key `routes[1].match.path`: invalid path \"/p/x{id}\": a parameter must be a whole segment"), "{err}");
    assert!(err.contains("3 errors"), "{err}");
}

#[test]
fn check_reports_bad_values_and_syntax_errors_with_locations() {
    let (code, err) = check("[server]\ndrain_timeout = \"5 minutes\"\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("FILE:2:17: key `server.drain_timeout`: invalid duration \"5 minutes\""),
        "{err}"
    );
    let (code, err) = check("[server\nlisten = 1\n");
    assert_eq!(code, 1);
    assert!(err.contains("FILE:1:"), "{err}");
    let (code, err) = check("[[routes]]\nname = \"r\"\n");
    assert_eq!(code, 1);
    assert!(err.contains("missing field `upstream`"), "{err}");
}

#[test]
fn hash_key_prints_the_sha256_of_stdin_or_the_argument() {
    use std::io::Write as _;
    // SHA-256("abc") (FIPS 180-2).
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let out = Command::new(BIN)
        .args(["hash-key", "abc"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ABC);
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ABC);
    // The printed hash is what [[consumers]] accepts.
    let (code, err) = check(&format!(
        "[[consumers]]\nname = \"acme\"\napi_keys = [\"{ABC}\"]\n"
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_reports_an_unreadable_file() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/portcullis.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/portcullis.toml: cannot read config file")
    );
}

/// The gateway binary running `serve`; killed on drop.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    path: std::path::PathBuf,
    logs: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    fn start(config: &str) -> Self {
        let (dir, path) = write_config(config);
        Self::spawn(dir, path, &[])
    }

    /// Runs `serve` on the config at `path` with `extra` arguments.
    fn spawn(dir: tempfile::TempDir, path: std::path::PathBuf, extra: &[&str]) -> Self {
        Self::spawn_env(dir, path, extra, &[])
    }

    /// Runs `serve` with extra environment variables.
    fn spawn_env(
        dir: tempfile::TempDir,
        path: std::path::PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .args(extra)
            .envs(env.iter().copied())
            .env("PORTCULLIS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the gateway never blocks on a full pipe; tests may wait for
        // a line.
        let (tx, logs) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            addr,
            path,
            logs,
            _dir: dir,
        }
    }

    /// Waits (up to 10 s) for a log line containing every one of `needles`; returns it.
    fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needles:?}"),
            }
        }
    }

    /// The admin listener's address, from its log line.
    fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_log(&["admin listener on http://"]);
        line.split("admin listener on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Replaces the config file the way editors do: write a new file, rename it over.
    fn rewrite_config(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc status"))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn one_route(up: &TestUpstream) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"20s\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n[[routes]]\nname = \"all\"\nupstream = \"up\"\n",
        up.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let (up, release) = TestUpstream::held("finished").await;
    let mut gw = GatewayProcess::start(&one_route(&up));
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url).await });
    tokio::time::timeout(Duration::from_secs(10), up.wait_requests(1))
        .await
        .expect("request never reached the upstream");

    gw.signal("-TERM");
    // The listener closes: new connections are refused while the old request is still held.
    let addr = gw.addr;
    tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("listener still accepting after SIGTERM");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    release.notify_waiters();
    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().as_ref(), b"finished");
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait().unwrap();
        (status, gw)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0));
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_transfers_stream_with_bounded_gateway_memory() {
    // Upstream: GET sends 10 MiB in 64 KiB chunks; PUT counts what it receives.
    let up = TestUpstream::start(Arc::new(|req| {
        Box::pin(async move {
            if req.method() == http::Method::PUT {
                let mut body = req.into_body();
                let mut n = 0;
                while let Some(frame) = body.frame().await {
                    n += frame.unwrap().into_data().map_or(0, |d| d.len());
                }
                return Response::new(full(n.to_string()));
            }
            let (mut tx, body) = Channel::<Bytes, Box<dyn std::error::Error + Send + Sync>>::new(2);
            tokio::spawn(async move {
                for _ in 0..(10 * MIB / (64 * 1024)) {
                    if tx
                        .send_data(Bytes::from(vec![7u8; 64 * 1024]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Response::new(TestBody::new(body))
        })
    }))
    .await;
    let gw = GatewayProcess::start(&one_route(&up));
    let client = Client::http1();
    // Warm up connections and allocator arenas, then take the baseline.
    assert_eq!(client.get(&gw.url("/warm")).await.body().len(), 10 * MIB);
    let baseline = gw.status_kib("VmRSS:");
    let hwm_before = gw.status_kib("VmHWM:");

    for _ in 0..3 {
        let down = client.get(&gw.url("/big")).await;
        assert_eq!(down.body().len(), 10 * MIB);
        let up_resp = client
            .send(
                Request::put(gw.url("/big"))
                    .body(Full::new(Bytes::from(vec![1u8; 10 * MIB])))
                    .unwrap(),
            )
            .await;
        assert_eq!(up_resp.body().as_ref(), (10 * MIB).to_string().as_bytes());
    }
    let peak = gw.status_kib("VmHWM:");
    let growth_kib = peak.saturating_sub(baseline.max(hwm_before));
    eprintln!("gateway peak RSS growth over 3x(10 MiB down + 10 MiB up): {growth_kib} KiB");
    // Buffering either body would grow the peak by at least 10 MiB.
    assert!(
        growth_kib < 4 * 1024,
        "gateway peak RSS grew by {growth_kib} KiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_the_demo_through_the_gateway() {
    let mut child = Command::new(BIN)
        .args([
            "quickstart",
            "--listen",
            "127.0.0.1:0",
            "--origins",
            "127.0.0.1:0",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .env("PORTCULLIS_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = |label: &str| -> SocketAddr {
        loop {
            let line = lines.next().expect("quickstart exited early").unwrap();
            if let Some(url) = line.trim().strip_prefix(label) {
                break url.trim().trim_start_matches("http://").parse().unwrap();
            }
        }
    };
    let addr = printed("gateway:");
    let admin = printed("admin:");
    std::thread::spawn(move || lines.for_each(drop));
    let client = Client::http1();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let resp = client.get(&format!("http://{addr}/api/hello")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["message"], "hello from the demo origin");
        instances.push(v["instance"].as_u64().unwrap());
    }
    instances.sort_unstable();
    assert_eq!(instances, [1, 2], "round robin over both demo instances");
    let cached: Vec<(String, Bytes)> = {
        let mut out = Vec::new();
        for _ in 0..2 {
            let resp = client.get(&format!("http://{addr}/cached/hello")).await;
            let x_cache = resp.headers()["x-cache"].to_str().unwrap().to_owned();
            out.push((x_cache, resp.into_body()));
        }
        out
    };
    assert_eq!(
        (cached[0].0.as_str(), cached[1].0.as_str()),
        ("MISS", "HIT")
    );
    assert_eq!(cached[0].1, cached[1].1, "the hit is the stored response");
    let metrics = client.get(&format!("http://{admin}/metrics")).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    assert!(
        text.contains(r#"portcullis_requests_total{route="api",method="GET",status="2xx"} 2"#),
        "{text}"
    );
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown_when_a_request_never_finishes() {
    let (up, _never) = TestUpstream::held("unreachable").await;
    let config = one_route(&up).replace("drain_timeout = \"20s\"", "drain_timeout = \"300ms\"");
    let mut gw = GatewayProcess::start(&config);
    let url = gw.url("/forever");
    let in_flight = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        client.get(url.parse().unwrap()).await
    });
    tokio::time::timeout(Duration::from_secs(10), up.wait_requests(1))
        .await
        .expect("request never reached the upstream");
    gw.signal("-TERM");
    let (status, _gw) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || (gw.child.wait().unwrap(), gw)),
    )
    .await
    .expect("gateway did not exit after the drain timeout")
    .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut request must fail, not succeed"
    );
}

fn routes_config(up: &TestUpstream, prefixes: &[&str], admin: bool) -> String {
    let mut text = "[server]\nlisten = \"127.0.0.1:0\"\n\n".to_owned();
    if admin {
        text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n\n");
    }
    text.push_str(&format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n",
        up.url()
    ));
    for p in prefixes {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"r{}\"\nmatch = {{ path_prefix = \"{p}\" }}\nupstream = \"up\"\n",
            p.trim_start_matches('/')
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_sighup_and_the_admin_api_reload_the_config() {
    let up = TestUpstream::start(echo()).await;
    let gw = GatewayProcess::start(&routes_config(&up, &["/a"], true));
    let admin = gw.admin_addr();
    let client = Client::http1();
    assert_eq!(
        client.get(&gw.url("/b/1")).await.status(),
        StatusCode::NOT_FOUND
    );

    // The file changes: /b appears.
    gw.rewrite_config(&routes_config(&up, &["/a", "/b"], true));
    gw.wait_log(&["configuration reloaded", "file change"]);
    assert_eq!(client.get(&gw.url("/b/1")).await.status(), StatusCode::OK);

    // A broken file is refused, with its location; the running config keeps serving.
    gw.rewrite_config("[[routes]]\nname = \"x\"\nupstream = \"nowhere\"\n");
    let refused = gw.wait_log(&["reload refused"]);
    assert!(refused.contains("file change"), "{refused}");
    assert_eq!(client.get(&gw.url("/b/1")).await.status(), StatusCode::OK);

    // SIGHUP re-reads the (repaired) file: /c appears, /b goes.
    std::fs::write(&gw.path, routes_config(&up, &["/a", "/c"], true)).unwrap();
    gw.signal("-HUP");
    gw.wait_log(&["configuration reloaded", "SIGHUP"]);
    assert_eq!(client.get(&gw.url("/c/1")).await.status(), StatusCode::OK);
    assert_eq!(
        client.get(&gw.url("/b/1")).await.status(),
        StatusCode::NOT_FOUND
    );

    // POST /admin/reload applies the file and reports.
    std::fs::write(&gw.path, routes_config(&up, &["/a", "/d"], true)).unwrap();
    let req = http::Request::post(format!("http://{admin}/admin/reload"))
        .body(http_body_util::Full::default())
        .unwrap();
    let resp = client.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let report: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(report["status"], "reloaded");
    assert_eq!(report["routes"], 2);
    assert_eq!(client.get(&gw.url("/d/1")).await.status(), StatusCode::OK);
}

/// Replaces `path` the way editors do: write a new file, rename it over.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_consumers_file_is_reloaded_and_a_broken_one_keeps_the_old_consumers() {
    let up = TestUpstream::start(echo()).await;
    let consumer = |name: &str, key: &str| {
        format!(
            "[[consumers]]\nname = \"{name}\"\napi_keys = [\"{}\"]\n",
            portcullis_auth::hash_key_hex(key.as_bytes())
        )
    };
    let config = format!(
        "{}auth = \"api_key\"\n\n[auth]\nconsumers_file = \"consumers.toml\"\n",
        one_route(&up)
    );
    let (dir, path) = write_config(&config);
    let consumers = dir.path().join("consumers.toml");
    std::fs::write(&consumers, consumer("carol", "key-carol")).unwrap();
    let gw = GatewayProcess::spawn(dir, path, &[]);
    let client = Client::http1();
    let status = |key: &'static str| {
        let req = Request::get(gw.url("/x"))
            .header("x-api-key", key)
            .body(Full::default())
            .unwrap();
        let client = &client;
        async move { client.send(req).await.status() }
    };
    assert_eq!(status("key-carol").await, StatusCode::OK);
    assert_eq!(status("key-dave").await, StatusCode::UNAUTHORIZED);

    // Only the consumers file changes: the gateway reloads and dave's key works.
    replace_file(
        &consumers,
        &(consumer("carol", "key-carol") + &consumer("dave", "key-dave")),
    );
    gw.wait_log(&["configuration reloaded", "file change"]);
    assert_eq!(status("key-dave").await, StatusCode::OK);

    // A broken consumers file is refused with its file, line and key; both keys keep working.
    replace_file(
        &consumers,
        "[[consumers]]\nname = \"erin\"\n\n[[consumers]]\nname = \"erin\"\n",
    );
    gw.wait_log(&["reload refused", "file change"]);
    let error = gw.wait_log(&["consumers.toml:5"]);
    assert!(error.contains("consumers[1].name"), "{error}");
    assert_eq!(status("key-carol").await, StatusCode::OK);
    assert_eq!(status("key-dave").await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_the_sockets_over_with_no_failed_request() {
    let up = TestUpstream::start(echo()).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhandover_socket = \"{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\n",
        socket.display(),
        up.url()
    );
    let mut old = GatewayProcess::start(&config);
    let admin = old.admin_addr();
    let url = old.url("/x");

    // Constant load over fresh and kept-alive connections.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (stop, failures, ok, url) = (
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&ok),
            url.clone(),
        );
        load.push(tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.get(&url).await;
                if resp.status() == StatusCode::OK {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    failures.lock().push(resp.status().to_string());
                }
            }
        }));
    }
    up.wait_requests(50).await;

    // The new process takes over; the old one drains and exits 0.
    let config_path = old.path.clone();
    let new = GatewayProcess::spawn(tempfile::tempdir().unwrap(), config_path, &["--takeover"]);
    assert_eq!(new.addr, old.addr, "the same socket");
    new.wait_log(&["took the listeners over"]);
    let status = tokio::task::spawn_blocking(move || {
        let status = old.child.wait().unwrap();
        (status, old)
    })
    .await
    .unwrap();
    assert_eq!(
        status.0.code(),
        Some(0),
        "the old process drains and exits 0"
    );

    // The new process alone serves now, the admin listener included.
    let seen = up.request_count();
    up.wait_requests(seen + 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        failures.lock().is_empty(),
        "failed requests: {:?}",
        failures.lock()
    );
    assert!(ok.load(std::sync::atomic::Ordering::Relaxed) > 100);
    let ready = Client::http1()
        .get(&format!("http://{admin}/health/ready"))
        .await;
    assert_eq!(ready.status(), StatusCode::OK);
    // And it can hand over again: its own hand-over socket is listening.
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    drop(new);
}

#[test]
fn the_kubernetes_configmap_config_passes_check() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes/portcullis.yaml"
    ))
    .unwrap();
    let toml: String = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("portcullis.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    assert!(toml.contains("[[routes]]"), "{toml}");
    let (_dir, path) = write_config(&toml);
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--config"]).arg(&path);
        cmd.env_remove("PORTCULLIS_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("PORTCULLIS_ADMIN_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let with_token = run(Some("a-long-enough-admin-token"));
    assert!(
        with_token.status.success(),
        "{}",
        String::from_utf8_lossy(&with_token.stderr)
    );
    // Without the Secret's token the non-loopback admin listener is refused.
    let without = run(None);
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("needs a token"));
}

/// libfaketime (Debian's `libfaketime`; scripts/test installs it): shifts a process's clocks.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_rate_limits_ignore_clock_skew_between_instances() {
    let redis = portcullis_test_support::RedisServer::start();
    let up = TestUpstream::start(echo()).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[redis]\nurl = \"{}\"\ntimeout = \"1s\"\n\n\
         [[upstreams]]\nname = \"up\"\ntargets = [{{ url = \"{}\" }}]\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"up\"\nrate_limit = {{ rate = \"10/h\" }}\n",
        redis.url(),
        up.url()
    );
    let (dir, path) = write_config(&config);
    let on_time = GatewayProcess::spawn(dir, path, &[]);
    let (dir, path) = write_config(&config);
    // Two hours ahead: a limiter timed by its instance's clock would see the other's quota as
    // long refilled.
    let ahead = GatewayProcess::spawn_env(
        dir,
        path,
        &[],
        &[("LD_PRELOAD", FAKETIME), ("FAKETIME", "+2h")],
    );
    let client = Client::http1();
    let mut ok = 0;
    let mut dates = Vec::new();
    for i in 0..30 {
        let gw = if i % 2 == 0 { &on_time } else { &ahead };
        let r = client.get(&gw.url("/")).await;
        ok += usize::from(r.status() == http::StatusCode::OK);
        if r.status() == http::StatusCode::TOO_MANY_REQUESTS && dates.len() < 2 && i >= 28 {
            dates.push(httpdate::parse_http_date(r.headers()["date"].to_str().unwrap()).unwrap());
        }
    }
    assert_eq!(ok, 10, "exactly the limit across both instances");
    // The skew is real: the gateways' own Date headers are two hours apart.
    let skew = dates[1].duration_since(dates[0]).unwrap();
    assert!(skew >= Duration::from_secs(7000), "skew {skew:?}");
}
