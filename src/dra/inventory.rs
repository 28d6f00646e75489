//! The inventory the DRA publisher follows: the host and its pools, re-read on every sysfs,
//! uevent or config change (the device plugin's event sources), sent as snapshots on a watch
//! channel. Queued events are drained before each re-read, so a burst costs one rescan.

use crate::HostPaths;
use crate::config::{self, Config};
use crate::dra::publish::Inventory;
use crate::host;
use crate::inventory::watch::{self as events, Event};
use crate::pools;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Where the inventory comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub paths: HostPaths,
    /// The device-plugin config; `None`: no pools (nothing published).
    pub config: Option<PathBuf>,
    pub default_prefix: String,
    /// Safety-net rescan period (a lost event is caught here at the latest).
    pub rescan: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Discover(#[from] host::DiscoverError),
}

fn read_config(src: &Source) -> Result<Config, config::ConfigError> {
    match &src.config {
        Some(p) => config::parse_config_file(p),
        None => Ok(Config::default()),
    }
}

fn snapshot(src: &Source, config: &Config) -> Result<Inventory, host::DiscoverError> {
    let host = host::discover(&src.paths)?;
    for s in &host.skipped {
        tracing::warn!(function = %s.address, "skipping function: {}", s.reason);
    }
    let pools = pools::build(&host, config, &src.default_prefix);
    Ok(Inventory { host, pools })
}

/// Read the inventory once (for a first publish, or `publish --once`).
pub fn read(src: &Source) -> Result<Inventory, InventoryError> {
    let config = read_config(src)?;
    Ok(snapshot(src, &config)?)
}

/// Start following the host: the first snapshot is read now (an error here is fatal), later
/// ones are sent as the host or config changes. A bad config change keeps the last good one.
pub fn follow(src: Source) -> Result<watch::Receiver<Arc<Inventory>>, InventoryError> {
    let mut config = read_config(&src)?;
    let first = snapshot(&src, &config)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let (etx, mut erx) = mpsc::channel::<Event>(256);
    events::sysfs_tree(&src.paths.sysfs_root, etx.clone());
    events::uevents(etx.clone());
    if let Some(p) = &src.config {
        events::config_dir(p, etx.clone());
    }
    events::periodic(src.rescan, etx);
    tokio::spawn(async move {
        while let Some(ev) = erx.recv().await {
            let mut config_touched = matches!(ev, Event::ConfigTouched);
            while let Ok(ev) = erx.try_recv() {
                config_touched |= matches!(ev, Event::ConfigTouched);
            }
            if config_touched {
                match read_config(&src) {
                    Ok(c) => config = c,
                    Err(e) => tracing::warn!("{e}; keeping the last good config"),
                }
            }
            let (s, c) = (src.clone(), config.clone());
            let snap = tokio::task::spawn_blocking(move || snapshot(&s, &c)).await;
            match snap {
                Ok(Ok(inv)) => {
                    if tx.send(Arc::new(inv)).is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => tracing::warn!("rescan failed: {e}"),
                Err(e) => tracing::warn!("rescan task: {e}"),
            }
        }
    });
    Ok(rx)
}
