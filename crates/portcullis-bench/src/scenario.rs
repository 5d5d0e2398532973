//! Scenario files (TOML): the target, stages or a preset, weighted requests with templated
//! paths, headers and bodies, variables, think time, checks and thresholds.
//!
//! ```toml
//! name = "catalogue"
//! base_url = "http://127.0.0.1:8080"
//! thresholds = ["p95 < 300ms", "error_rate < 1%"]
//!
//! [[stages]]
//! duration = "30s"
//! rate = 200          # requests per second (open model); `users = 20` for the closed model
//!
//! [vars]
//! id = { range = [1, 1000] }
//! sku = { list = ["a1", "b2"] }
//! user = { csv = "users.csv" }   # header line names the columns: {{user.email}}, ...
//!
//! [[requests]]
//! name = "product"
//! weight = 3
//! url = "/products/{{sku}}?user={{id}}"
//! checks = { status = 200, header = "x-cache" }
//! thresholds = ["p99 < 500ms"]
//! ```
//!
//! A stage can shift the mix: `mix = { product = 1, order = 4 }` gives the named requests
//! those weights while the stage runs (the others 0); stages without `mix` use each
//! request's own `weight`.
//!
//! Unknown keys are errors, and every error names the file, the key and the line.

use std::{collections::BTreeMap, path::Path, str::FromStr, time::Duration};

use http::{HeaderName, Method};
use serde::{Deserialize, Deserializer, de::Error as _};
use toml::Spanned;

use crate::{
    check::Check,
    cli::{DEFAULT_CONNECTIONS, DEFAULT_TIMEOUT, RunArgs},
    duration::parse_duration,
    error::BenchError,
    plan::{Model, Plan, ThinkTime},
    preset::Preset,
    profile::{Profile, Stage},
    request::{HttpVersion, RequestKind, Target},
    template::{Template, Variable, Variables},
    threshold::Threshold,
};

/// A value parsed from a TOML string with its `FromStr`, so a bad value is reported by the
/// TOML parser with its line and column.
#[derive(Debug, Clone)]
struct Parsed<T>(T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr<Err = String>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Parsed).map_err(D::Error::custom)
    }
}

/// A duration in a scenario.
#[derive(Debug, Clone, Copy)]
struct Span(Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Span)
    }
}

/// `"100ms"` or `"50ms..200ms"`.
impl FromStr for ThinkTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse_duration(a)?, parse_duration(b)?);
                if max < min {
                    return Err(format!("think time {s:?}: the range is reversed"));
                }
                Ok(ThinkTime { min, max })
            }
            None => {
                let d = parse_duration(s)?;
                Ok(ThinkTime { min: d, max: d })
            }
        }
    }
}

#[derive(Debug, Clone)]
struct MethodSpec(Method);

impl FromStr for MethodSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Method::from_str(s)
            .map(MethodSpec)
            .map_err(|_| format!("invalid method {s:?}"))
    }
}

#[derive(Debug, Clone)]
struct HeaderNameSpec(HeaderName);

impl FromStr for HeaderNameSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HeaderName::from_str(s)
            .map(HeaderNameSpec)
            .map_err(|_| format!("invalid header name {s:?}"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    base_url: Option<String>,
    #[serde(default)]
    http: Option<HttpSpec>,
    timeout: Option<Parsed<Span>>,
    connections: Option<usize>,
    streams: Option<usize>,
    think_time: Option<Parsed<ThinkTime>>,
    start: Option<f64>,
    preset: Option<Parsed<Preset>>,
    peak_rate: Option<f64>,
    peak_users: Option<f64>,
    duration: Option<Parsed<Span>>,
    #[serde(default)]
    thresholds: Vec<Parsed<Threshold>>,
    #[serde(default)]
    count_headers: Vec<Parsed<HeaderNameSpec>>,
    #[serde(default)]
    stages: Vec<Spanned<StageSpec>>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<VarSpec>>,
    #[serde(default)]
    requests: Vec<Spanned<RequestSpec>>,
}

#[derive(Debug, Deserialize)]
enum HttpSpec {
    #[serde(rename = "1.1")]
    Http1,
    #[serde(rename = "2")]
    Http2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageSpec {
    duration: Parsed<Span>,
    rate: Option<f64>,
    users: Option<f64>,
    /// Weights by request name while this stage runs; requests it leaves out get 0.
    mix: Option<BTreeMap<String, Spanned<u32>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VarSpec {
    list: Option<Vec<ListValue>>,
    range: Option<[i64; 2]>,
    /// A CSV file (relative to the scenario file) whose header line names the columns.
    csv: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ListValue {
    fn into_text(self) -> String {
        match self {
            ListValue::Text(s) => s,
            ListValue::Int(i) => i.to_string(),
            ListValue::Float(f) => f.to_string(),
            ListValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    name: Option<String>,
    weight: Option<u32>,
    method: Option<Parsed<MethodSpec>>,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    checks: Option<CheckSpec>,
    #[serde(default)]
    thresholds: Vec<Parsed<Threshold>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSpec {
    status: Option<StatusSpec>,
    header: Option<Parsed<HeaderNameSpec>>,
    body_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusSpec {
    One(u16),
    Many(Vec<u16>),
}

/// Reads a CSV file (RFC 4180: quoted fields, `""` escapes) into a table variable: the first
/// line names the columns, every other line is a row with as many fields.
fn read_table(path: &Path) -> Result<Variable, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| format!("{}: {}", path.display(), csv_error(&e)))?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| format!("{}: {}", path.display(), csv_error(&e)))?
        .iter()
        .map(|c| c.trim().to_owned())
        .collect();
    if let Some(bad) = columns
        .iter()
        .find(|c| c.is_empty() || c.contains(['{', '}', '.']))
    {
        return Err(format!(
            "{}: column names must be non-empty without braces or dots, not {bad:?}",
            path.display()
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{}: {}", path.display(), csv_error(&e)))?;
        rows.push(record.iter().map(str::to_owned).collect());
    }
    if rows.is_empty() {
        return Err(format!("{}: no rows after the header line", path.display()));
    }
    Ok(Variable::Rows { columns, rows })
}

/// A CSV error with its line, without the crate's position noise.
fn csv_error(e: &csv::Error) -> String {
    match (e.kind(), e.position()) {
        (
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            },
            Some(p),
        ) => format!(
            "line {}: {len} fields where the header line has {expected_len}",
            p.line()
        ),
        (csv::ErrorKind::Io(io), _) => io.to_string(),
        (_, Some(p)) => format!("line {}: {e}", p.line()),
        _ => e.to_string(),
    }
}

/// A stage's `mix` as weights in the order of `kinds`: the requests it leaves out get 0.
/// `at(offset, key, why)` builds the error for a name that is no request's.
fn stage_mix(
    mix: BTreeMap<String, Spanned<u32>>,
    kinds: &[RequestKind],
    at: &dyn Fn(usize, &str, String) -> BenchError,
) -> Result<Vec<u32>, BenchError> {
    let mut weights = vec![0; kinds.len()];
    for (name, weight) in mix {
        let Some(k) = kinds.iter().position(|k| *k.name == *name) else {
            let names: Vec<&str> = kinds.iter().map(|k| &*k.name).collect();
            return Err(at(
                weight.span().start,
                &format!("mix.{name}"),
                format!("no request named {name:?} (requests: {})", names.join(", ")),
            ));
        };
        weights[k] = weight.into_inner();
    }
    Ok(weights)
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Loads a scenario and merges the command line into it (URL, -c, --http2, thresholds...).
pub(crate) fn load(path: &Path, args: &RunArgs) -> Result<Plan, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|error| BenchError::Io {
        path: path.to_owned(),
        error,
    })?;
    parse(&text, path, args)
}

/// Parses scenario text (see [`load`]).
pub(crate) fn parse(text: &str, path: &Path, args: &RunArgs) -> Result<Plan, BenchError> {
    let err = |message: String| BenchError::Scenario {
        path: path.to_owned(),
        message,
    };
    let file: ScenarioFile =
        toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_owned()))?;
    let at = |offset: usize, key: &str, why: String| {
        err(format!("line {}: {key}: {why}", line_of(text, offset)))
    };

    // Variables.
    let mut vars = BTreeMap::new();
    for (name, spec) in file.vars {
        let offset = spec.span().start;
        let key = format!("vars.{name}");
        let spec = spec.into_inner();
        let var = match (spec.list, spec.range, spec.csv) {
            (Some(list), None, None) => {
                Variable::List(list.into_iter().map(ListValue::into_text).collect())
            }
            (None, Some([lo, hi]), None) => Variable::Range(lo, hi),
            (None, None, Some(file)) => {
                let csv_path = path.parent().unwrap_or(Path::new(".")).join(&file);
                read_table(&csv_path).map_err(|why| at(offset, &key, why))?
            }
            _ => {
                return Err(at(
                    offset,
                    &key,
                    "give exactly one of list = [...], range = [low, high] or csv = \"file\""
                        .to_owned(),
                ));
            }
        };
        vars.insert(name, var);
    }
    let variables = Variables::new(vars).map_err(|e| err(format!("vars: {e}")))?;

    // Requests.
    if file.requests.is_empty() {
        return Err(err("no [[requests]]: add at least one request".to_owned()));
    }
    let mut kinds = Vec::new();
    let mut kind_offsets = Vec::new();
    let mut thresholds: Vec<Threshold> = file.thresholds.into_iter().map(|t| t.0).collect();
    for (i, spec) in file.requests.into_iter().enumerate() {
        let offset = spec.span().start;
        let key = format!("requests[{i}]");
        let spec = spec.into_inner();
        let name = spec.name.clone().unwrap_or_else(|| spec.url.clone());
        if kinds.iter().any(|k: &RequestKind| *k.name == *name) {
            return Err(at(offset, &key, format!("duplicate request name {name:?}")));
        }
        let template = |field: &str, t: &str| {
            Template::parse(t, &variables).map_err(|e| at(offset, &format!("{key}.{field}"), e))
        };
        if !spec.url.starts_with('/') {
            return Err(at(
                offset,
                &format!("{key}.url"),
                format!(
                    "{:?} must be a path starting with '/' (the origin is base_url)",
                    spec.url
                ),
            ));
        }
        let mut headers = Vec::new();
        for (h, value) in &spec.headers {
            let name = HeaderName::from_str(h).map_err(|_| {
                at(
                    offset,
                    &format!("{key}.headers"),
                    format!("invalid header name {h:?}"),
                )
            })?;
            headers.push((name, template(&format!("headers.{h}"), value)?));
        }
        let mut checks = Vec::new();
        if let Some(c) = spec.checks {
            if let Some(status) = c.status {
                checks.push(Check::Status(match status {
                    StatusSpec::One(s) => vec![s],
                    StatusSpec::Many(v) => v,
                }));
            }
            if let Some(h) = c.header {
                checks.push(Check::HeaderPresent(h.0.0));
            }
            if let Some(b) = c.body_contains {
                checks.push(Check::BodyContains(b));
            }
        }
        for t in spec.thresholds {
            thresholds.push(t.0.scoped(&name));
        }
        kind_offsets.push(offset);
        kinds.push(RequestKind {
            name: name.into(),
            weight: spec.weight.unwrap_or(1),
            method: spec.method.map_or(Method::GET, |m| m.0.0),
            path: template("url", &spec.url)?,
            headers,
            body: spec
                .body
                .as_deref()
                .map(|b| template("body", b))
                .transpose()?,
            checks,
        });
    }
    if let Some(k) = kinds.iter().find(|k| k.weight == 0) {
        return Err(err(format!("request {:?}: weight must be above 0", k.name)));
    }

    // Load profile: explicit stages, or a preset, or the command line.
    let (model, profile, stage_weights) = if !file.stages.is_empty() {
        if file.preset.is_some() {
            return Err(err("give either [[stages]] or preset, not both".to_owned()));
        }
        let mut model = None;
        let mut stages = Vec::new();
        let mut stage_weights = Vec::new();
        for (i, stage) in file.stages.into_iter().enumerate() {
            let offset = stage.span().start;
            let key = format!("stages[{i}]");
            let stage = stage.into_inner();
            let (m, target) = match (stage.rate, stage.users) {
                (Some(r), None) => (Model::Open, r),
                (None, Some(u)) => (Model::Closed, u),
                _ => {
                    return Err(at(
                        offset,
                        &key,
                        "give exactly one of rate = N or users = N".to_owned(),
                    ));
                }
            };
            if model.is_some_and(|prev| prev != m) {
                return Err(at(
                    offset,
                    &key,
                    "all stages use rate, or all use users".to_owned(),
                ));
            }
            model = Some(m);
            let weights = match stage.mix {
                None => None,
                Some(mix) => {
                    let at_key = |o: usize, k: &str, why| at(o, &format!("{key}.{k}"), why);
                    let weights = stage_mix(mix, &kinds, &at_key)?;
                    if weights.iter().all(|&w| w == 0) {
                        let why = "give at least one request a weight above 0".to_owned();
                        return Err(at(offset, &format!("{key}.mix"), why));
                    }
                    Some(weights)
                }
            };
            stage_weights.push(weights);
            stages.push(Stage {
                duration: stage.duration.0.0,
                target,
            });
        }
        let profile = Profile::new(file.start.unwrap_or(0.0), &stages)
            .map_err(|e| err(format!("stages: {e}")))?;
        if stage_weights.iter().all(Option::is_none) {
            stage_weights.clear();
        }
        // A request every stage's mix leaves out would never be sent.
        for (k, kind) in kinds.iter().enumerate() {
            if !stage_weights.is_empty()
                && stage_weights
                    .iter()
                    .all(|w| w.as_ref().is_some_and(|w| w[k] == 0))
            {
                return Err(at(
                    kind_offsets[k],
                    &format!("requests[{k}]"),
                    format!(
                        "request {:?} is in no stage's mix, so it would never be sent",
                        kind.name
                    ),
                ));
            }
        }
        (model.unwrap_or(Model::Closed), profile, stage_weights)
    } else if let Some(preset) = file.preset {
        let preset = preset.0;
        let (model, peak) = match (file.peak_rate, file.peak_users) {
            (Some(r), None) => (Model::Open, r),
            (None, Some(u)) => (Model::Closed, u),
            _ => {
                return Err(err(format!(
                    "preset {preset}: give exactly one of peak_rate or peak_users"
                )));
            }
        };
        let total = file.duration.map_or(preset.default_duration(), |d| d.0.0);
        let (start, stages) = preset.stages(peak, total);
        (
            model,
            Profile::new(start, &stages).map_err(|e| err(format!("preset {preset}: {e}")))?,
            Vec::new(),
        )
    } else {
        return Err(err("no load: add [[stages]] (with rate or users) or preset = \"load\" with peak_rate or peak_users".to_owned()));
    };

    let version = match (args.http2, file.http) {
        (true, _) | (false, Some(HttpSpec::Http2)) => HttpVersion::Http2,
        _ => HttpVersion::Http1,
    };
    let base = args.url.clone().or(file.base_url).ok_or_else(|| {
        err("no target: set base_url or give a URL on the command line".to_owned())
    })?;
    let (target, base_path) =
        Target::from_url(&base, version).map_err(|e| err(format!("base_url: {e}")))?;
    if base_path != "/" {
        return Err(err(format!(
            "base_url {base:?}: give only the origin; paths belong in requests.url"
        )));
    }
    let mut count_headers: Vec<HeaderName> =
        file.count_headers.into_iter().map(|h| h.0.0).collect();
    count_headers.extend(args.counted_headers()?);
    thresholds.extend(args.thresholds.iter().cloned());
    let plan = Plan {
        name: file.name.unwrap_or_else(|| path.display().to_string()),
        target,
        model,
        profile,
        connections: args
            .connections
            .or(file.connections)
            .unwrap_or(DEFAULT_CONNECTIONS),
        streams: args.streams.or(file.streams).unwrap_or(1),
        max_requests: args.requests,
        timeout: args
            .timeout
            .or(file.timeout.map(|t| t.0.0))
            .unwrap_or(DEFAULT_TIMEOUT),
        think_time: file.think_time.map(|t| t.0),
        kinds,
        stage_weights,
        variables,
        thresholds,
        count_headers,
        verification: args.verification(),
        progress: !args.quiet,
    };
    plan.validate().map_err(err)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The bench flags alone, to build the `RunArgs` a scenario is merged with.
    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    fn plan_of(text: &str) -> Result<Plan, String> {
        let flags = Flags::try_parse_from(["bench"]).map_err(|e| e.to_string())?;
        parse(text, Path::new("mix.toml"), &flags.run).map_err(|e| e.to_string())
    }

    const REQUESTS: &str = r#"
[[requests]]
name = "browse"
weight = 3
url = "/items"

[[requests]]
name = "buy"
url = "/orders"
"#;

    #[test]
    fn stages_name_their_own_weights_and_leave_out_the_rest() {
        let text = format!(
            r#"base_url = "http://127.0.0.1:1"

[[stages]]
duration = "10s"
rate = 10

[[stages]]
duration = "2s"
rate = 100
mix = {{ buy = 4 }}

[[stages]]
duration = "10s"
rate = 10
[stages.mix]
browse = 1
buy = 1
{REQUESTS}"#
        );
        let plan = plan_of(&text).unwrap();
        assert_eq!(
            plan.stage_weights,
            [None, Some(vec![0, 4]), Some(vec![1, 1])]
        );
        assert_eq!(plan.kinds[0].weight, 3, "a request keeps its own weight");
    }

    #[test]
    fn without_stage_mixes_every_stage_uses_the_request_weights() {
        let text = format!(
            "base_url = \"http://127.0.0.1:1\"\n[[stages]]\nduration = \"1s\"\nusers = 2\n{REQUESTS}"
        );
        assert!(plan_of(&text).unwrap().stage_weights.is_empty());
    }

    #[test]
    fn stage_mix_errors_name_the_file_the_key_and_the_line() {
        let head = "base_url = \"http://127.0.0.1:1\"\n";
        let cases: &[(&str, &[&str])] = &[
            (
                // The stage starts on line 2, its mix table on line 5; the bad name is on line 7.
                "[[stages]]\nduration = \"1s\"\nrate = 1\n[stages.mix]\nbrowse = 1\nsell = 2\n",
                &[
                    "mix.toml: line 7: stages[0].mix.sell",
                    "no request named \"sell\" (requests: browse, buy)",
                ],
            ),
            (
                "[[stages]]\nduration = \"1s\"\nrate = 1\nmix = { browse = 0, buy = 0 }\n",
                &[
                    "line 2: stages[0].mix",
                    "give at least one request a weight above 0",
                ],
            ),
            (
                "[[stages]]\nduration = \"1s\"\nrate = 1\nmix = { browse = -1 }\n",
                &["mix.toml:", "line 5", "mix", "invalid value: integer `-1`"],
            ),
            (
                "[[stages]]\nduration = \"1s\"\nrate = 1\nmix = { browse = 1 }\n",
                &[
                    "requests[1]",
                    "\"buy\" is in no stage's mix, so it would never be sent",
                ],
            ),
            (
                "[[stages]]\nduration = \"1s\"\nrate = 1\nmix = { browse = 1 }\nweights = { buy = 1 }\n",
                &["line 6", "unknown field `weights`"],
            ),
        ];
        for (stages, wants) in cases {
            let err = plan_of(&format!("{head}{stages}{REQUESTS}")).unwrap_err();
            for want in *wants {
                assert!(err.contains(want), "want {want:?} in:\n{err}");
            }
        }
    }

    #[test]
    fn plans_built_in_code_check_their_stage_weights_too() {
        let text = format!(
            "base_url = \"http://127.0.0.1:1\"\n[[stages]]\nduration = \"1s\"\nrate = 1\n{REQUESTS}"
        );
        let mut plan = plan_of(&text).unwrap();
        assert_eq!(plan.validate(), Ok(()));
        let cases: [(Vec<Option<Vec<u32>>>, &str); 4] = [
            (vec![None, None], "2 stage mixes for 1 stages"),
            (vec![Some(vec![1])], "stage 1: 1 weights for 2 requests"),
            (vec![Some(vec![0, 0])], "stage 1: the mix gives no request"),
            (
                vec![Some(vec![0, 1])],
                "\"browse\" has weight 0 in every stage",
            ),
        ];
        for (weights, want) in cases {
            plan.stage_weights = weights;
            let err = plan.validate().unwrap_err();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }

    #[test]
    fn the_request_in_no_stage_mix_is_reported_at_its_own_line() {
        let text = format!(
            "base_url = \"http://127.0.0.1:1\"\n[[stages]]\nduration = \"1s\"\nrate = 1\nmix = {{ buy = 1 }}\n{REQUESTS}"
        );
        let err = plan_of(&text).unwrap_err();
        // The first [[requests]] table ("browse") starts on line 7.
        assert!(err.contains("line 7: requests[0]"), "{err}");
    }
}
