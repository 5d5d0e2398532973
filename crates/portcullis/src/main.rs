//! `portcullis`: the gateway binary.
//!
//! Sub-commands: `serve --config FILE` runs the gateway, `check --config FILE` validates a config
//! and exits 1 on errors, `quickstart` runs a demo origin with the gateway in front of it.

mod demo_origin;
mod reload;
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
        /// Admin listener address (metrics, health; overrides examples/quickstart.toml).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_reload = init_tracing();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Serve { config } => {
            runtime().and_then(|rt| rt.block_on(serve(config, log_reload.as_ref())))
        }
        Command::Quickstart {
            listen,
            origins,
            admin,
        } => runtime().and_then(|rt| rt.block_on(quickstart(listen, admin, &origins))),
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

/// Changes the log filter once the config is read.
type LogReload = Box<dyn Fn(tracing_subscriber::EnvFilter)>;

/// Diagnostic logs to stderr. The filter comes from `PORTCULLIS_LOG`, else `RUST_LOG`, else
/// `[log] level` (applied by [`apply_log_level`] once the config is read), else `info`.
fn init_tracing() -> Option<LogReload> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let from_env = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .ok();
    let env_set = from_env.is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(from_env.unwrap_or_else(|| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter_reloading();
    let handle = builder.reload_handle();
    builder.init();
    (!env_set).then(|| -> LogReload {
        Box::new(move |filter| {
            let _ = handle.reload(filter);
        })
    })
}

/// Applies `[log] level` unless the environment chose the filter.
fn apply_log_level(reload: Option<&LogReload>, config: &portcullis_config::Config) {
    if let (Some(reload), Some(level)) = (reload, &config.log.level)
        && let Ok(filter) = tracing_subscriber::EnvFilter::try_new(level.get_ref())
    {
        reload(filter);
    }
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

async fn serve(path: PathBuf, log_reload: Option<&LogReload>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&path).ok();
    let config = portcullis_config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    apply_log_level(log_reload, &config);
    let gateway = bind(&config).await?;
    let reloader = reload::Reloader::new(path, gateway.handle(), text);
    reloader.clone().on_sighup();
    reloader.clone().on_file_change();
    let admin = bind_admin(&config, &gateway, Some(reloader)).await?;
    run(gateway, admin).await;
    Ok(())
}

/// Binds the admin listener when the config has an `[admin]` table; `reloader` serves
/// `POST /admin/reload`.
async fn bind_admin(
    config: &portcullis_config::Config,
    gateway: &portcullis_proxy::BoundGateway,
    reloader: Option<reload::Reloader>,
) -> anyhow::Result<Option<portcullis_admin::Admin>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let reload = reloader.map(|r| -> portcullis_admin::ReloadFn {
        std::sync::Arc::new(move || r.reload("admin API"))
    });
    Ok(Some(
        portcullis_admin::Admin::bind(admin, gateway.handle(), reload).await?,
    ))
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

/// Serves until a shutdown signal, then drains; the admin listener stays up through the drain
/// (readiness answers 503 meanwhile) and stops after it.
async fn run(gateway: portcullis_proxy::BoundGateway, admin: Option<portcullis_admin::Admin>) {
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = admin.map(|a| {
        tokio::spawn(a.serve(async move {
            let _ = admin_stopped.await;
        }))
    });
    gateway.serve(shutdown::signal()).await;
    let _ = stop_admin.send(());
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    info!("stopped");
}

async fn quickstart(
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
    origin_addrs: &[String],
) -> anyhow::Result<()> {
    const CONFIG: &str = include_str!("../../../examples/quickstart.toml");
    let mut config = portcullis_config::parse(CONFIG, "examples/quickstart.toml".as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let origins = demo_origin::start(origin_addrs).await?;
    // Point the demo upstream at the instances actually bound (they differ only when the
    // command line overrides the addresses, e.g. port 0 in tests).
    config.server.listen = listen;
    if let Some(admin) = &mut config.admin {
        *admin.listen.get_mut() = admin_listen;
    }
    if let Some(up) = config.upstreams.first_mut() {
        for (target, addr) in up.targets.get_mut().iter_mut().zip(&origins) {
            *target.url.get_mut() = format!("http://{addr}");
        }
    }
    let gateway = bind(&config).await?;
    let admin = bind_admin(&config, &gateway, None).await?;
    let admin_url = admin.as_ref().map(|a| format!("http://{}", a.local_addr()));
    let gw = format!("http://{}", gateway.local_addr());
    let list: Vec<String> = origins.iter().map(|a| format!("http://{a}")).collect();
    println!("Portcullis quickstart");
    println!("  demo origin instances: {}", list.join(", "));
    println!("  gateway:               {gw}");
    if let Some(admin) = &admin_url {
        println!("  admin:                 {admin}");
    }
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
    if let Some(admin) = &admin_url {
        println!(
            "  curl -s {admin}/metrics | grep portcullis_requests_total   # Prometheus metrics"
        );
        println!("  curl -s {admin}/health/status      # health summary (JSON)");
    }
    println!();
    println!("Press Ctrl-C to stop.");
    run(gateway, admin).await;
    Ok(())
}
