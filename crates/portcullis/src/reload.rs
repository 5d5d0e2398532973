//! Reloading the configuration while serving: on SIGHUP, when the config file changes, and on
//! `POST /admin/reload`. Each trigger re-reads and validates the file; a bad file is refused
//! with its errors in the log (or the admin response) and the running configuration keeps
//! serving. The swap itself is `GatewayHandle::reload` (crates/portcullis-proxy/src/handle.rs).

use std::{
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

/// Reloads one gateway from one config file.
#[derive(Clone)]
pub(crate) struct Reloader {
    path: PathBuf,
    handle: GatewayHandle,
    /// The text last applied (or refused), so repeated change events for the same content
    /// do not rebuild the gateway.
    last_text: Arc<Mutex<Option<String>>>,
}

impl Reloader {
    pub(crate) fn new(path: PathBuf, handle: GatewayHandle, text: Option<String>) -> Self {
        Self {
            path,
            handle,
            last_text: Arc::new(Mutex::new(text)),
        }
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

    /// Applies the file if its text differs from the last one seen (`Ok(None)` when not).
    fn reload_if_changed(&self) -> Option<Result<ReloadReport, String>> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        if self.last_text.lock().as_deref() == Some(text.as_str()) {
            return None;
        }
        Some(self.try_reload(Some(text)))
    }

    fn try_reload(&self, text: Option<String>) -> Result<ReloadReport, String> {
        let text = match text {
            Some(t) => t,
            None => std::fs::read_to_string(&self.path)
                .map_err(|e| format!("{}: cannot read: {e}", self.path.display()))?,
        };
        *self.last_text.lock() = Some(text.clone());
        let config = portcullis_config::parse(&text, &self.path).map_err(|e| e.to_string())?;
        self.handle.reload(&config).map_err(|e| e.to_string())
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

    /// Reloads when the config file changes. Watches its directory, since editors and config
    /// management replace files by renaming.
    pub(crate) fn on_file_change(self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let name = self.path.file_name().map(ToOwned::to_owned);
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event.paths.iter().any(|p| p.file_name() == name.as_deref())
            {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch the config file; reload by SIGHUP or the admin API");
                return;
            }
        };
        if let Err(e) =
            notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive)
        {
            warn!(error = %e, dir = %dir.display(), "cannot watch the config directory");
            return;
        }
        tokio::spawn(async move {
            let _watcher = watcher;
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
