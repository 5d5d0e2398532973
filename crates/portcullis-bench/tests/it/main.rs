//! Integration tests of `portcullis bench` against real HTTP servers on loopback: the command
//! line is parsed as the binary parses it, the run goes over real sockets, and the assertions
//! read the report, the server's own view of what arrived, or the files written. One binary
//! (modules below) to keep link time down.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod open_model;
mod quick;
mod reports;
mod scenarios;
mod stages;
mod thresholds;
mod wire;

use std::{sync::Arc, time::Instant};

use clap::Parser;
use parking_lot::Mutex;
use portcullis_bench::{BenchCommand, Outcome, Report};
use portcullis_test_support::{TestUpstream, full};

/// The binary's command line, reduced to the `bench` sub-command.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Bench(BenchCommand),
}

/// Parses `portcullis bench ARGS...`.
pub(crate) fn parse(args: &[&str]) -> Result<BenchCommand, clap::Error> {
    let argv = ["portcullis", "bench"].iter().chain(args);
    Cli::try_parse_from(argv).map(|cli| match cli.command {
        Command::Bench(b) => b,
    })
}

/// Runs `portcullis bench ARGS... -q` and returns the outcome.
pub(crate) async fn bench(args: &[&str]) -> Outcome {
    let mut all = args.to_vec();
    if args.first() != Some(&"compare") {
        all.push("-q");
    }
    let command = parse(&all).unwrap_or_else(|e| panic!("{e}"));
    portcullis_bench::run(command)
        .await
        .unwrap_or_else(|e| panic!("bench failed: {e}"))
}

/// The error of a run that must be refused.
pub(crate) async fn bench_error(args: &[&str]) -> String {
    let command = parse(args).unwrap_or_else(|e| panic!("{e}"));
    match portcullis_bench::run(command).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// The report of a run.
pub(crate) async fn report(args: &[&str]) -> Report {
    bench(args).await.report.expect("a run has a report")
}

/// An upstream answering 200 "ok" and recording when each request arrived.
pub(crate) async fn timed_upstream() -> (TestUpstream, Arc<Mutex<Vec<Instant>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    let up = TestUpstream::respond(move |_req| {
        seen.lock().push(Instant::now());
        http::Response::new(full("ok"))
    })
    .await;
    (up, arrivals)
}

/// Arrivals in `[from, to)` seconds after the first one.
pub(crate) fn arrivals_between(arrivals: &[Instant], from: f64, to: f64) -> usize {
    let Some(first) = arrivals.iter().min().copied() else {
        return 0;
    };
    arrivals
        .iter()
        .map(|a| a.duration_since(first).as_secs_f64())
        .filter(|t| *t >= from && *t < to)
        .count()
}
