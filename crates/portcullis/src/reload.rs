//! Reloading the configuration while serving: on SIGHUP, when the config file or its
//! `[auth] consumers_file` changes, and on `POST /admin/reload`. Each trigger re-reads and
//! validates both files; a bad one is refused with its errors in the log (or the admin
//! response) and the running configuration, consumers included, keeps serving. The swap
//! itself is `GatewayHandle::reload` (crates/portcullis-proxy/src/handle.rs).

use std::{
    collections::HashSet,
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use portcullis_proxy::{GatewayHandle, ReloadReport};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// How long the file must be quiet after a change before it is read (editors write in steps).
const SETTLE: Duration = Duration::from_millis(200);

/// Reloads one gateway from one config file (and its consumers file).
#[derive(Clone)]
pub(crate) struct Reloader {
    path: PathBuf,
    handle: GatewayHandle,
    /// The texts last applied (or refused), so repeated change events for the same content
    /// do not rebuild the gateway.
    last_inputs: Arc<Mutex<Option<Inputs>>>,
    /// The consumers file of the configuration in force.
    consumers_file: Arc<Mutex<Option<PathBuf>>>,
    /// The file watcher and the names of the files it reacts to.
    watch: Arc<Mutex<Watch>>,
}

/// The texts of the config file and of its consumers file.
#[derive(PartialEq, Eq)]
struct Inputs {
    config: String,
    consumers: Option<String>,
}

#[derive(Default)]
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    dirs: HashSet<PathBuf>,
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl Reloader {
    /// A reloader of the config at `path`, which `config` was loaded from.
    pub(crate) fn new(
        path: PathBuf,
        handle: GatewayHandle,
        config: &portcullis_config::Config,
    ) -> Self {
        let consumers_file = consumers_file(config);
        let this = Self {
            path,
            handle,
            last_inputs: Arc::new(Mutex::new(None)),
            consumers_file: Arc::new(Mutex::new(consumers_file)),
            watch: Arc::new(Mutex::new(Watch::default())),
        };
        *this.last_inputs.lock() = this.read_inputs().ok();
        this
    }

    /// The current texts of the config file and of the consumers file in force.
    fn read_inputs(&self) -> Result<Inputs, String> {
        let config = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: cannot read: {e}", self.path.display()))?;
        let consumers = self
            .consumers_file
            .lock()
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        Ok(Inputs { config, consumers })
    }

    /// Re-reads the file and applies it.
    pub(crate) fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        let result = self.try_reload(None);
        match &result {
            Ok(report) => {
                info!(
                    routes = report.routes,
                    upstreams = report.upstreams,
                    upstreams_kept = report.upstreams_kept,
                    "configuration reloaded ({trigger})"
                );
                if !report.needs_restart.is_empty() {
                    warn!(keys = ?report.needs_restart, "changed settings take effect only after a restart");
                }
            }
            Err(errors) => {
                warn!(
                    "reload refused ({trigger}); the running configuration keeps serving:\n{errors}"
                );
            }
        }
        result
    }

    /// Applies the files if their texts differ from the last ones seen (`None` when not).
    fn reload_if_changed(&self) -> Option<Result<ReloadReport, String>> {
        let inputs = self.read_inputs().ok()?;
        if self.last_inputs.lock().as_ref() == Some(&inputs) {
            return None;
        }
        Some(self.try_reload(Some(inputs)))
    }

    fn try_reload(&self, inputs: Option<Inputs>) -> Result<ReloadReport, String> {
        let inputs = match inputs {
            Some(i) => i,
            None => self.read_inputs()?,
        };
        let parsed = portcullis_config::parse(&inputs.config, &self.path);
        *self.last_inputs.lock() = Some(inputs);
        let config = parsed.map_err(|e| e.to_string())?;
        let report = self.handle.reload(&config).map_err(|e| e.to_string())?;
        // The consumers file may have moved with the config.
        let file = consumers_file(&config);
        if *self.consumers_file.lock() != file {
            (*self.consumers_file.lock()).clone_from(&file);
            if let Ok(inputs) = self.read_inputs() {
                *self.last_inputs.lock() = Some(inputs);
            }
            if let Some(file) = &file {
                self.watch_file(file);
            }
        }
        Ok(report)
    }

    /// Reloads on every SIGHUP until the process ends.
    pub(crate) fn on_sighup(self) {
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                warn!("cannot listen for SIGHUP; reload by file change or the admin API");
                return;
            };
            while hup.recv().await.is_some() {
                let this = self.clone();
                let _ = tokio::task::spawn_blocking(move || this.reload("SIGHUP")).await;
            }
        });
    }

    /// Watches `file` too: its directory (editors and config management replace files by
    /// renaming), reacting to events on its name.
    fn watch_file(&self, file: &Path) {
        let mut watch = self.watch.lock();
        if let Some(name) = file.file_name() {
            watch.names.lock().insert(name.to_owned());
        }
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        if watch.dirs.contains(&dir) {
            return;
        }
        let Some(watcher) = &mut watch.watcher else {
            return;
        };
        match notify::Watcher::watch(watcher, &dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                watch.dirs.insert(dir);
            }
            Err(e) => warn!(error = %e, dir = %dir.display(), "cannot watch a config directory"),
        }
    }

    /// Reloads when the config file or the consumers file changes.
    pub(crate) fn on_file_change(self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let names = Arc::clone(&self.watch.lock().names);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.lock().contains(n)))
            {
                let _ = tx.send(());
            }
        });
        match watcher {
            Ok(w) => self.watch.lock().watcher = Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the config file; reload by SIGHUP or the admin API");
                return;
            }
        }
        self.watch_file(&self.path);
        let consumers = self.consumers_file.lock().clone();
        if let Some(file) = consumers {
            self.watch_file(&file);
        }
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Settle: wait until no event came for SETTLE.
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
                let this = self.clone();
                let result = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                match result {
                    Ok(Some(Ok(report))) => info!(
                        routes = report.routes,
                        upstreams = report.upstreams,
                        upstreams_kept = report.upstreams_kept,
                        "configuration reloaded (file change)"
                    ),
                    Ok(Some(Err(errors))) => warn!(
                        "reload refused (file change); the running configuration keeps serving:\n{errors}"
                    ),
                    _ => {}
                }
            }
        });
    }
}

/// The consumers file `config` names (absolute once validated).
fn consumers_file(config: &portcullis_config::Config) -> Option<PathBuf> {
    config
        .auth
        .consumers_file
        .as_ref()
        .map(|p| p.get_ref().clone())
}
