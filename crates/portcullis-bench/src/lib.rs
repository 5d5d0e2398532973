//! `portcullis bench`: a load tester for proving a gateway's SLOs in CI.
//!
//! - Quick mode from flags ([`cli::RunArgs`]): `portcullis bench URL -c 64 -d 30s` (closed
//!   model, fixed connections) or `--rate 2000` (open model: a constant arrival rate, latency
//!   counted from the intended send time so a stall cannot hide; see [`engine`]).
//! - Scenario files ([`scenario`]): stages that ramp rate or users linearly ([`profile`]),
//!   presets ([`preset`]), weighted requests with templates ([`template`]), think time,
//!   checks ([`check`]).
//! - Sending: one connection per worker (HTTP/2 streams can share one); HTTP/1.1 over plain
//!   TCP through a small client of its own (`http1_wire.rs`, for wrk-level efficiency),
//!   HTTP/2 and TLS through hyper (`connection.rs`, `exchange.rs`).
//! - Measurement ([`recorder`]): HdrHistograms per request kind in a few shards, merged at
//!   the end; errors by kind; counted response headers (`X-Cache` → cache hit rate); a bounded
//!   per-second timeline ([`timeline`]).
//! - Verdicts and reports: thresholds ([`threshold`]), the final table ([`table`]), the JSON
//!   report with a versioned schema ([`report`]), the HTML page ([`html`]) and `compare`
//!   ([`compare`]).
//!
//! The binary only parses [`BenchCommand`] and calls [`run`].

pub mod check;
pub mod cli;
pub mod compare;
mod connection;
pub mod duration;
pub mod engine;
pub mod error;
mod exchange;
pub mod html;
mod http1_wire;
pub mod plan;
pub mod preset;
pub mod profile;
mod progress;
pub mod recorder;
pub mod report;
pub mod request;
pub mod scenario;
mod summary;
pub mod table;
pub mod template;
pub mod threshold;
pub mod timeline;
pub mod tls;

pub use cli::{BenchAction, BenchCommand, CompareArgs, RunArgs};
pub use error::BenchError;
pub use plan::{Model, Plan};
pub use report::Report;

/// The exit code when a threshold fails (or `compare --max-regression` finds a regression);
/// the same code k6 uses, so CI can tell a broken SLO from a broken run (exit 1).
pub const EXIT_THRESHOLDS_FAILED: u8 = 99;

/// What a finished command produced.
#[derive(Debug)]
pub struct Outcome {
    /// The run's report (absent for `compare`).
    pub report: Option<Report>,
    /// The summary printed to stdout.
    pub summary: String,
    /// 0 when everything passed, [`EXIT_THRESHOLDS_FAILED`] otherwise.
    pub exit_code: u8,
}

/// Runs `portcullis bench ...`: a load test (printing the summary and writing the reports
/// asked for) or `compare`. Ctrl-C ends a run early and still reports.
pub async fn run(command: BenchCommand) -> Result<Outcome, BenchError> {
    match command.action {
        Some(BenchAction::Compare(args)) => compare_reports(&args),
        None => load_test(&command.run).await,
    }
}

/// Builds the plan a command line describes (quick mode or a scenario file).
pub fn plan(args: &RunArgs) -> Result<Plan, BenchError> {
    match &args.scenario {
        Some(path) => scenario::load(path, args),
        None => args.quick_plan(),
    }
}

async fn load_test(args: &RunArgs) -> Result<Outcome, BenchError> {
    let plan = plan(args)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let result = engine::execute(plan, stop_rx).await;
    ctrl_c.abort();
    let report = result?;
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&report)).map_err(|error| BenchError::Io {
            path: path.clone(),
            error,
        })?;
    }
    let summary = table::render(&report);
    println!("{summary}");
    let exit_code = if report.passed {
        0
    } else {
        EXIT_THRESHOLDS_FAILED
    };
    Ok(Outcome {
        report: Some(report),
        summary,
        exit_code,
    })
}

fn compare_reports(args: &CompareArgs) -> Result<Outcome, BenchError> {
    let a = Report::read_json(&args.baseline)?;
    let b = Report::read_json(&args.candidate)?;
    let (summary, regressed) = compare::render(&a, &b, args.max_regression);
    println!("{summary}");
    Ok(Outcome {
        report: None,
        summary,
        exit_code: if regressed { EXIT_THRESHOLDS_FAILED } else { 0 },
    })
}
