//! `portcullis`: the gateway binary.
//!
//! Sub-commands: `serve --config FILE` runs the gateway, `check --config FILE` validates a config
//! and exits 1 on errors, `quickstart` runs a demo origin with the gateway in front of it,
//! `bench` load-tests a URL or a scenario (`portcullis-bench`; exit 99 when a threshold fails).

mod demo_origin;
mod shutdown;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::info;

/// Portcullis: an API gateway and performance layer.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file without serving; exit code 1 on errors.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a built-in demo origin and the gateway in front of it (no setup needed).
    Quickstart {
        /// Gateway address (overrides examples/quickstart.toml).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Addresses of the two demo origin instances (port 0 picks free ports).
        #[arg(long, num_args = 2, default_values = ["127.0.0.1:3001", "127.0.0.1:3002"])]
        origins: Vec<String>,
    },
    /// Load-test a URL or a scenario file; `bench compare A.json B.json` compares reports.
    Bench(Box<portcullis_bench::BenchCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Serve { config } => runtime().and_then(|rt| rt.block_on(serve(config))),
        Command::Quickstart { listen, origins } => {
            runtime().and_then(|rt| rt.block_on(quickstart(listen, &origins)))
        }
        Command::Bench(command) => {
            let outcome =
                runtime().and_then(|rt| Ok(rt.block_on(portcullis_bench::run(*command))?));
            return match outcome {
                Ok(outcome) => ExitCode::from(outcome.exit_code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one thread per CPU the process may use. On a single CPU (a container
/// limited to one core, or `taskset -c N`), a current-thread runtime skips the work-stealing
/// machinery, which measurably raises proxy throughput (BENCHMARKS.md).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match portcullis_config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} upstreams, {} routes)",
                path.display(),
                config.upstreams.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.0.len();
            eprintln!(
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = portcullis_config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = bind(&config).await?;
    run(gateway).await;
    Ok(())
}

async fn bind(
    config: &portcullis_config::Config,
) -> anyhow::Result<portcullis_proxy::BoundGateway> {
    let gateway = portcullis_proxy::Gateway::from_config(config)?
        .bind()
        .await?;
    let scheme = if gateway.is_tls() { "https" } else { "http" };
    info!(
        address = %gateway.local_addr(),
        routes = config.routes.len(),
        upstreams = config.upstreams.len(),
        "listening on {scheme}://{}", gateway.local_addr()
    );
    Ok(gateway)
}

async fn run(gateway: portcullis_proxy::BoundGateway) {
    gateway.serve(shutdown::signal()).await;
    info!("stopped");
}

async fn quickstart(listen: std::net::SocketAddr, origin_addrs: &[String]) -> anyhow::Result<()> {
    const CONFIG: &str = include_str!("../../../examples/quickstart.toml");
    let mut config = portcullis_config::parse(CONFIG, "examples/quickstart.toml".as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let origins = demo_origin::start(origin_addrs).await?;
    // Point the demo upstream at the instances actually bound (they differ only when the
    // command line overrides the addresses, e.g. port 0 in tests).
    config.server.listen = listen;
    if let Some(up) = config.upstreams.first_mut() {
        for (target, addr) in up.targets.get_mut().iter_mut().zip(&origins) {
            *target.url.get_mut() = format!("http://{addr}");
        }
    }
    let gateway = bind(&config).await?;
    let gw = format!("http://{}", gateway.local_addr());
    let list: Vec<String> = origins.iter().map(|a| format!("http://{a}")).collect();
    println!("Portcullis quickstart");
    println!("  demo origin instances: {}", list.join(", "));
    println!("  gateway:               {gw}");
    println!();
    println!("Try:");
    println!("  curl -i {gw}/api/hello            # proxied to the origin as /hello");
    println!(
        "  curl -s {gw}/api/hello; curl -s {gw}/api/hello   # round robin over both instances"
    );
    println!("  curl -i {gw}/api/slow?ms=300      # a slow origin response");
    println!(
        "  curl -si {gw}/cached/slow?ms=300 | grep -i x-cache   # twice: MISS, then a fast HIT"
    );
    println!("  curl -i -X POST --data 'hi' {gw}/api/echo");
    println!("  curl -i --http2-prior-knowledge {gw}/api/hello");
    println!();
    println!("Press Ctrl-C to stop.");
    run(gateway).await;
    Ok(())
}
