//! The `portcullis bench` command line (clap derive, flattened into the binary's CLI), and its
//! lowering into a [`Plan`] for quick mode (`portcullis bench URL -c 64 -d 30s`).

use std::{path::PathBuf, str::FromStr, time::Duration};

use http::{HeaderName, HeaderValue, Method};

use crate::{
    duration::parse_duration,
    error::BenchError,
    plan::{Model, Plan},
    preset::Preset,
    profile::Profile,
    request::{HttpVersion, RequestKind, Target},
    template::{Template, Variables},
    threshold::Threshold,
    tls::Verification,
};

/// Connections (closed model: users) when `-c` is not given.
pub const DEFAULT_CONNECTIONS: usize = 50;
/// Run length when neither `-d` nor `-n` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Per-request timeout when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `portcullis bench`: load-test a URL or a scenario, gate on thresholds, write reports.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    /// `compare A.json B.json`.
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    /// A load test.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Sub-commands of `portcullis bench`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchAction {
    /// Compare two JSON reports: the differences from A (baseline) to B.
    Compare(CompareArgs),
}

/// `portcullis bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The baseline report (`--json` output).
    pub baseline: PathBuf,
    /// The report to compare with it.
    pub candidate: PathBuf,
    /// Exit 99 when p50, p95 or p99 grew, or req/s fell, by more than this (e.g. `10%`).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_regression: Option<f64>,
}

/// Flags of a load test.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Target URL (with `--scenario`, replaces the scenario's `base_url`).
    pub url: Option<String>,
    /// A scenario file (TOML): stages, weighted requests, checks, thresholds.
    #[arg(long, short = 's', value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Connections: users in the closed model, the most in flight with --rate.
    #[arg(long, short = 'c', value_name = "N")]
    pub connections: Option<usize>,
    /// Run length (`30s`, `5m`); 10s when neither -d nor -n is given.
    #[arg(long, short = 'd', value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, short = 'n', value_name = "N")]
    pub requests: Option<u64>,
    /// Open model: this many requests per second, whatever the responses do.
    #[arg(long, short = 'r', value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// A load shape scaled to --rate (or -c) and -d: smoke, load, stress, spike, soak.
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Request method.
    #[arg(long, short = 'm', default_value = "GET")]
    pub method: String,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long, short = 'b', value_name = "TEXT", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// HTTP/2 (prior knowledge over http://, ALPN over https://).
    #[arg(long)]
    pub http2: bool,
    /// HTTP/2: requests in flight per connection (-c users share -c/N connections).
    #[arg(long, value_name = "N")]
    pub streams: Option<usize>,
    /// Per-request timeout, from the send to the end of the body (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub timeout: Option<Duration>,
    /// Count the values of this response header (repeatable; X-Cache always is).
    #[arg(long = "count-header", value_name = "NAME")]
    pub count_headers: Vec<String>,
    /// A threshold, e.g. `p95 < 200ms`, `error_rate < 1%`, `p99{login} < 1s` (repeatable).
    #[arg(long = "threshold", short = 't', value_name = "EXPR", value_parser = parse_threshold)]
    pub thresholds: Vec<Threshold>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Skip TLS certificate verification.
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn parse_threshold(s: &str) -> Result<Threshold, String> {
    s.parse()
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v = s.trim();
    match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => v.parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a percentage (e.g. 10%)"))
}

/// Parses `Name: value`.
pub(crate) fn parse_header(text: &str) -> Result<(HeaderName, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header {text:?}: expected \"Name: value\""))?;
    let name = HeaderName::from_str(name.trim())
        .map_err(|_| format!("header {text:?}: invalid name {:?}", name.trim()))?;
    let value = value.trim();
    HeaderValue::from_str(value).map_err(|_| format!("header {text:?}: invalid value"))?;
    Ok((name, value.to_owned()))
}

impl RunArgs {
    /// TLS verification from `--insecure` and `--cacert`.
    pub(crate) fn verification(&self) -> Verification {
        match (&self.cacert, self.insecure) {
            (Some(path), _) => Verification::CaFile(path.clone()),
            (None, true) => Verification::Skip,
            (None, false) => Verification::SystemRoots,
        }
    }

    /// The HTTP version from `--http2`.
    pub(crate) fn version(&self) -> HttpVersion {
        if self.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        }
    }

    /// Response headers to count.
    pub(crate) fn counted_headers(&self) -> Result<Vec<HeaderName>, BenchError> {
        self.count_headers
            .iter()
            .map(|h| {
                HeaderName::from_str(h.trim()).map_err(|_| {
                    BenchError::invalid(format!("--count-header {h:?}: invalid header name"))
                })
            })
            .collect()
    }

    /// The profile from `--rate`/`-c`, `-d`/`-n` and `--preset`.
    fn profile(&self) -> Result<(Model, Profile, usize), BenchError> {
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(BenchError::invalid("--rate must be above 0"));
        }
        if self.connections == Some(0) {
            return Err(BenchError::invalid("-c must be at least 1"));
        }
        let connections = self.connections.unwrap_or(DEFAULT_CONNECTIONS);
        let (model, level) = match self.rate {
            Some(rate) => (Model::Open, rate),
            None => (Model::Closed, connections as f64),
        };
        let profile = match self.preset {
            Some(preset) => {
                let total = self.duration.unwrap_or(preset.default_duration());
                let (start, stages) = preset.stages(level, total);
                Profile::new(start, &stages)
            }
            None => {
                // With -n alone the run ends at the count; the "duration" is just a bound.
                let total = match (self.duration, self.requests) {
                    (Some(d), _) => d,
                    (None, Some(_)) => Duration::from_secs(365 * 24 * 3600),
                    (None, None) => DEFAULT_DURATION,
                };
                Profile::constant(level, total)
            }
        }
        .map_err(|e| BenchError::invalid(format!("load profile: {e}")))?;
        Ok((model, profile, connections))
    }

    /// The plan of a quick-mode run.
    pub(crate) fn quick_plan(&self) -> Result<Plan, BenchError> {
        let url = self.url.as_deref().ok_or_else(|| {
            BenchError::invalid("give a URL (portcullis bench http://host/path) or --scenario FILE")
        })?;
        let (target, path) = Target::from_url(url, self.version()).map_err(BenchError::Invalid)?;
        let method = Method::from_str(&self.method)
            .map_err(|_| BenchError::invalid(format!("invalid method {:?}", self.method)))?;
        let vars = Variables::default();
        // Quick mode sends text as it is: no placeholders.
        let literal = |text: &str| -> Result<Template, BenchError> { Ok(Template::literal(text)) };
        let headers = self
            .headers
            .iter()
            .map(|h| {
                let (name, value) = parse_header(h).map_err(BenchError::Invalid)?;
                Ok((name, literal(&value)?))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let body = match (&self.body, &self.body_file) {
            (Some(b), _) => Some(literal(b)?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|error| BenchError::Io {
                    path: path.clone(),
                    error,
                })?;
                Some(literal(&text)?)
            }
            (None, None) => None,
        };
        let (model, profile, connections) = self.profile()?;
        let kind = RequestKind {
            name: format!("{method} {path}").into(),
            weight: 1,
            method,
            path: literal(&path)?,
            headers,
            body,
            checks: Vec::new(),
        };
        let plan = Plan {
            name: url.to_owned(),
            target,
            model,
            profile,
            connections,
            streams: self.streams.unwrap_or(1),
            max_requests: self.requests,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            think_time: None,
            kinds: vec![kind],
            stage_weights: Vec::new(),
            variables: vars,
            thresholds: self.thresholds.clone(),
            count_headers: self.counted_headers()?,
            verification: self.verification(),
            progress: !self.quiet,
        };
        plan.validate().map_err(BenchError::Invalid)?;
        Ok(plan)
    }
}
