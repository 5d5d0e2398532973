//! Real `redis-server` processes for tests: one server, or a 3-node Redis Cluster, each on free
//! loopback ports with nothing persisted, killed on drop.
//!
//! Readiness is a signal, not a sleep: a server is ready when it logs "Ready to accept
//! connections"; a cluster when every node reports `cluster_state:ok`.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// One `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server that speaks only TLS, with the certificate and key in these PEM files
    /// (clients are not asked for certificates).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(&[
            "--port",
            "0",
            "--tls-port",
            PORT,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &cert,
            "--tls-auth-clients",
            "no",
        ])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--cluster-enabled yes`);
    /// [`PORT`] (`{port}`) in them stands for the port chosen.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path(), &extra) {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                    extra,
                };
            }
        }
        panic!("redis-server did not start (is it installed? scripts/test installs it)");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (clients see connection errors); [`RedisServer::restart`] brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn(self.port, self.dir.path(), &self.extra) {
                self.child = Some(child);
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart");
            // The old socket may linger for a moment in the kernel.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `redis-cli ARGS` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A 3-master Redis Cluster (no replicas), killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes and joins them; returns once every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend([
            "--cluster-replicas".into(),
            "0".into(),
            "--cluster-yes".into(),
        ]);
        let status = Command::new("redis-cli")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    /// The seed URLs of all nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A master, one replica and one Sentinel watching them as `mymaster`; killed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    servers: Vec<RedisServer>,
    sentinel: Child,
    sentinel_port: u16,
    _dir: TempDir,
}

/// The name the Sentinel knows the master by.
pub const SENTINEL_MASTER: &str = "mymaster";

impl RedisSentinel {
    /// Starts the master, the replica (returns once it is in sync) and the Sentinel (returns
    /// once it knows the replica).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        wait_until("the replica to sync", || {
            replica
                .cli(&["info", "replication"])
                .contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().expect("temp dir for sentinel");
        let conf = dir.path().join("sentinel.conf");
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {} 1\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                    dir.path().display(),
                    master.port
                ),
            )
            .expect("write sentinel.conf");
            let Ok(mut child) = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            else {
                continue;
            };
            let up = wait_for(Duration::from_secs(5), || {
                redis_cli(port, &["sentinel", "replicas", SENTINEL_MASTER])
                    .contains(&replica.port.to_string())
            });
            if up {
                return Self {
                    servers: vec![master, replica],
                    sentinel: child,
                    sentinel_port: port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis sentinel did not start");
    }

    /// The Sentinel's URL.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port of the server the Sentinel names as master now.
    pub fn master_port(&self) -> u16 {
        let out = redis_cli(
            self.sentinel_port,
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("the sentinel names a master")
    }

    /// The server listening on `port` (the master or the replica).
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("one of the two servers")
    }

    /// Makes the replica the master (`SENTINEL FAILOVER`) and returns once the Sentinel names
    /// it and it accepts writes.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        // Until the Sentinel has the replica's INFO it finds no replica to promote
        // (NOGOODSLAVE): ask again.
        let mut out = String::new();
        wait_until("the sentinel to accept the failover", || {
            out = redis_cli(
                self.sentinel_port,
                &["sentinel", "failover", SENTINEL_MASTER],
            );
            out.contains("OK")
        });
        wait_until("the sentinel to name the new master", || {
            self.master_port() != old
        });
        let new = self.master_port();
        wait_until("the new master to accept writes", || {
            self.server(new)
                .cli(&["set", "pc:failover-probe", "1"])
                .contains("OK")
        });
        new
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// Polls `cond` (a Redis state with no notification to wait on) for up to 20 s.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_for(Duration::from_secs(20), cond),
        "timed out waiting for {what}"
    );
}

fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Spawns a server on `port` and waits for its ready line; `None` if it exited (port taken).
/// In [`RedisServer::start_with`]'s arguments, the port the server gets.
pub const PORT: &str = "{port}";

fn spawn(port: u16, dir: &Path, extra: &[String]) -> Option<Child> {
    let extra = extra.iter().map(|a| a.replace(PORT, &port.to_string()));
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (scripts/test installs it)");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("Ready to accept connections"));
    if ready {
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
