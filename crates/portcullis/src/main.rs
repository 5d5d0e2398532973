//! `portcullis`: the gateway binary.
//!
//! Sub-commands: `serve --config FILE` runs the gateway, `check --config FILE` validates a config
//! and exits 1 on errors, `quickstart` runs a demo origin with the gateway in front of it,
//! `bench` load-tests a URL or a scenario (`portcullis-bench`; exit 99 when a threshold fails),
//! `hash-key` prints the SHA-256 hash of an API key for `[[consumers]]`.

mod demo_origin;
mod handover;
mod reload;
mod shutdown;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

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
        /// Take the listening sockets over from the gateway serving `server.handover_socket`
        /// (zero-downtime restart); it then drains and exits. Binds normally if none answers.
        #[arg(long)]
        takeover: bool,
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
    /// Load-test a URL or a scenario file; `bench compare A.json B.json` compares reports.
    Bench(Box<portcullis_bench::BenchCommand>),
    /// Print the SHA-256 hash of an API key, for `api_keys` in `[[consumers]]`. Reads the key
    /// from standard input (its first line) unless it is given as an argument.
    HashKey {
        /// The key; prefer standard input, since arguments end up in shell history.
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_reload = init_tracing();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::HashKey { key } => return hash_key(key),
        Command::Serve { config, takeover } => {
            runtime().and_then(|rt| rt.block_on(serve(config, takeover, log_reload.as_ref())))
        }
        Command::Quickstart {
            listen,
            origins,
            admin,
        } => runtime().and_then(|rt| rt.block_on(quickstart(listen, admin, &origins))),
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

/// `hash-key`: prints the hash of the key given, or of the first line of standard input.
fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(k) => k,
        None => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("error: cannot read the key from standard input: {e}");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if key.is_empty() {
        eprintln!("error: the key is empty");
        return ExitCode::FAILURE;
    }
    println!("{}", portcullis_auth::hash_key_hex(key.as_bytes()));
    ExitCode::SUCCESS
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

async fn serve(
    path: PathBuf,
    takeover: bool,
    log_reload: Option<&LogReload>,
) -> anyhow::Result<()> {
    let config = portcullis_config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    apply_log_level(log_reload, &config);
    let handover_path = config.server.handover_socket.clone();
    let inherited = match (takeover, &handover_path) {
        (false, _) => None,
        (true, None) => anyhow::bail!("--takeover needs server.handover_socket in the config"),
        (true, Some(p)) => match handover::take_over(p) {
            Ok(inherited) => Some(inherited),
            Err(e) => {
                warn!(path = %p.display(), error = %e, "nothing to take over; binding the listeners");
                None
            }
        },
    };
    let (gateway, admin_listener, inherited) = match inherited {
        Some(handover::Inherited {
            public,
            admin,
            pending,
        }) => {
            let gateway = portcullis_proxy::Gateway::from_config(&config)?.adopt(public)?;
            announce(&config, &gateway, " (taken over)");
            let admin = match admin {
                Some(l) => {
                    l.set_nonblocking(true)?;
                    Some(tokio::net::TcpListener::from_std(l)?)
                }
                None => None,
            };
            (gateway, admin, Some(pending))
        }
        None => (bind(&config).await?, None, None),
    };
    let reloader = reload::Reloader::new(path, gateway.handle(), &config);
    reloader.clone().on_sighup();
    reloader.clone().on_file_change();
    let admin = bind_admin(&config, &gateway, Some(reloader), admin_listener).await?;
    if let Some(pending) = inherited {
        pending.confirm()?;
        info!("took the listeners over; the previous process drains");
    }
    let handover = match handover_path {
        Some(path) => {
            let mut fds = vec![gateway.listener_fd()?];
            if let Some(a) = &admin {
                fds.push(a.listener_fd()?);
            }
            Some((path, fds, admin.is_some()))
        }
        None => None,
    };
    run(gateway, admin, handover).await;
    Ok(())
}

/// Binds the admin listener when the config has an `[admin]` table; `reloader` serves
/// `POST /admin/reload`.
async fn bind_admin(
    config: &portcullis_config::Config,
    gateway: &portcullis_proxy::BoundGateway,
    reloader: Option<reload::Reloader>,
    inherited: Option<tokio::net::TcpListener>,
) -> anyhow::Result<Option<portcullis_admin::Admin>> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let reload = reloader.map(|r| -> portcullis_admin::ReloadFn {
        std::sync::Arc::new(move || r.reload("admin API"))
    });
    Ok(Some(match inherited {
        Some(listener) => {
            portcullis_admin::Admin::adopt(admin, gateway.handle(), reload, listener)?
        }
        None => portcullis_admin::Admin::bind(admin, gateway.handle(), reload).await?,
    }))
}

async fn bind(
    config: &portcullis_config::Config,
) -> anyhow::Result<portcullis_proxy::BoundGateway> {
    let gateway = portcullis_proxy::Gateway::from_config(config)?
        .bind()
        .await?;
    announce(config, &gateway, "");
    Ok(gateway)
}

fn announce(
    config: &portcullis_config::Config,
    gateway: &portcullis_proxy::BoundGateway,
    how: &str,
) {
    let scheme = if gateway.is_tls() { "https" } else { "http" };
    info!(
        address = %gateway.local_addr(),
        routes = config.routes.len(),
        upstreams = config.upstreams.len(),
        "listening on {scheme}://{}{how}", gateway.local_addr()
    );
}

/// Serves until a shutdown signal (or a hand-over to a new process), then drains. The admin
/// listener stays up through a signalled drain (readiness answers 503 meanwhile) and stops
/// after it; after a hand-over it stops at once, since the new process serves the same socket.
async fn run(
    gateway: portcullis_proxy::BoundGateway,
    admin: Option<portcullis_admin::Admin>,
    handover: Option<(PathBuf, Vec<std::os::fd::OwnedFd>, bool)>,
) {
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin = admin.map(|a| {
        let mut stopped = admin_stopped.clone();
        tokio::spawn(a.serve(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    });
    let shutdown = {
        let stop_admin = stop_admin.clone();
        async move {
            match handover {
                Some((path, fds, has_admin)) => tokio::select! {
                    () = shutdown::signal() => {}
                    () = handover::serve(path, fds, has_admin) => {
                        let _ = stop_admin.send(true);
                    }
                },
                None => shutdown::signal().await,
            }
        }
    };
    gateway.serve(shutdown).await;
    let _ = stop_admin.send(true);
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
    let admin = bind_admin(&config, &gateway, None, None).await?;
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
    run(gateway, admin, None).await;
    Ok(())
}
