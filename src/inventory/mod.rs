//! The inventory: what this node offers, kept current, published whole.
//!
//! It owns the events that change what is offered (sysfs rescans, link states, config file
//! touches, claims) and after every change publishes one immutable [`Inventory`] on a
//! `tokio::sync::watch` channel: the last good config, the host snapshot and, per pool, a
//! [`PoolView`] with each device's health and the allocation rules (known IDs, healthy only,
//! held elsewhere, preferred choice). Front ends (the device plugin in `serve`, the DRA driver)
//! subscribe and only publish; the kubelet directory and CDI spec files are theirs.
//!
//! The decisions are in [`Reconciler`] (events in, inventory out, no timers), so tests inject
//! events; [`start`] wires it to the real watchers and runs it off the runtime threads.

pub mod claims;
mod preferred;
mod reconcile;
mod view;
pub mod watch;

pub use claims::Claims;
pub use preferred::preferred;
pub use reconcile::Reconciler;
pub use view::{Advertised, AllocError, IdsError, PoolView};
pub use watch::Event;

use crate::HostPaths;
use crate::config::{Config, ConfigError};
use crate::health::{self, LinkStates};
use crate::host::{self, DiscoverError, Host};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::error;

/// What the node offers at one moment. Plain data behind `Arc`: cheap to hand to every
/// subscriber, never changed once published.
#[derive(Debug)]
pub struct Inventory {
    /// Counts publications, from 1.
    pub generation: u64,
    /// Counts rebuilds of the pools (the config or the host changed), from 1; health, claims
    /// and config rejections leave it.
    pub pools_generation: u64,
    pub host: Arc<Host>,
    pub paths: Arc<HostPaths>,
    /// The last good config.
    pub config: Arc<Config>,
    /// Pool (resource) name -> the pool with its health.
    pub pools: BTreeMap<String, Arc<PoolView>>,
    /// Config reloads since start, taken and rejected.
    pub config_reloads: ConfigReloads,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigReloads {
    pub ok: u64,
    pub failed: u64,
}

/// A front end's own rules on the config, checked with the parse (the device plugin's: every
/// pool has a socket name that fits). A config they refuse is refused like a bad one.
pub type ConfigCheck = Arc<dyn Fn(&Config) -> Result<(), ConfigError> + Send + Sync>;

/// What the inventory needs to start.
#[derive(Clone)]
pub struct InventoryOptions {
    pub paths: HostPaths,
    pub config_path: PathBuf,
    pub default_prefix: String,
    /// Safety-net rescan period (a config's `periodicUpdateInterval` above 0 replaces it);
    /// events do the real work.
    pub rescan_interval: Duration,
    /// Watch the host: kernel uevents and inotify on the sysfs tree. Off: the periodic
    /// rescan alone.
    pub watch_host: bool,
    /// Watch live link states through rtnetlink (this network namespace). Off: from sysfs.
    pub watch_links: bool,
    /// The claims known at start (see [`InventoryTask::set_claims`] for later ones).
    pub claims: Claims,
    pub config_check: Option<ConfigCheck>,
}

impl std::fmt::Debug for InventoryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryOptions")
            .field("paths", &self.paths)
            .field("config_path", &self.config_path)
            .field("default_prefix", &self.default_prefix)
            .field("rescan_interval", &self.rescan_interval)
            .field("watch_host", &self.watch_host)
            .field("watch_links", &self.watch_links)
            .field("claims", &self.claims)
            .field(
                "config_check",
                &self.config_check.as_ref().map(|_| "(a front end's rules)"),
            )
            .finish()
    }
}

impl InventoryOptions {
    /// Every watcher on, no claims, no extra config rules.
    pub fn new(paths: HostPaths, config_path: PathBuf, default_prefix: String) -> Self {
        InventoryOptions {
            paths,
            config_path,
            default_prefix,
            rescan_interval: Duration::from_secs(10),
            watch_host: true,
            watch_links: true,
            claims: Claims::default(),
            config_check: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("config {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("{what} failed: {message}")]
    Task { what: &'static str, message: String },
}

/// The running inventory. Dropping it (or [`InventoryTask::stop`]) stops it; the watchers end
/// with it.
pub struct InventoryTask {
    events: mpsc::Sender<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl InventoryTask {
    /// Who holds which device now; a new inventory follows when that changes what is offered.
    pub async fn set_claims(&self, claims: Claims) {
        let _ = self.events.send(Event::Claims(claims)).await;
    }

    /// Inject an event as a watcher would (e.g. a front end that knows the host changed).
    pub fn sender(&self) -> mpsc::Sender<Event> {
        self.events.clone()
    }

    /// Stop the inventory and its watchers (what dropping it does, said out loud).
    pub fn stop(self) {}
}

impl Drop for InventoryTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read the config (unreadable or bad: an error) and the host, start the watchers, take
/// rtnetlink's first dump (a second at most, so the first inventory carries live link
/// states), and keep the inventory current from then on. The receiver holds the first
/// inventory already.
pub async fn start(
    opts: InventoryOptions,
) -> Result<(InventoryTask, tokio::sync::watch::Receiver<Arc<Inventory>>), InventoryError> {
    let o = opts.clone();
    let (config_bytes, config) = tokio::task::spawn_blocking(move || reconcile::first_config(&o))
        .await
        .map_err(|e| task_failed("reading the config", e))??;

    let (tx, mut rx) = mpsc::channel(1024);
    // Watch before the first read of the host, so nothing can change unseen in between.
    watch::config_dir(&opts.config_path, tx.clone());
    if opts.watch_host {
        watch::sysfs_tree(&opts.paths.sysfs_root, tx.clone());
        watch::uevents(tx.clone());
    }
    let links_watched = opts.watch_links && watch::links(tx.clone());
    // A shared plugin's `periodicUpdateInterval` only sets this safety net (read at start);
    // its 0 ("never") keeps the default, so a lost event is still caught.
    let rescan_every = match config.periodic_update_interval {
        Some(n) if n > 0 => Duration::from_secs(n),
        _ => opts.rescan_interval,
    };
    watch::periodic(rescan_every, tx.clone());

    let paths = opts.paths.clone();
    let host = tokio::task::spawn_blocking(move || host::discover(&paths))
        .await
        .map_err(|e| task_failed("reading the host", e))??;
    let mut links = LinkStates::new();
    let early = match links_watched {
        true => first_link_dump(&mut links, &mut rx).await,
        false => Vec::new(),
    };
    let o = opts.clone();
    let build = move || {
        let mut r = Reconciler::with(&o, config_bytes, config, host, links);
        if !early.is_empty() {
            r.apply(early);
        }
        r
    };
    let reconciler = tokio::task::spawn_blocking(build)
        .await
        .map_err(|e| task_failed("building the inventory", e))?;
    let (publish, subscribe) = tokio::sync::watch::channel(reconciler.current());
    let task = tokio::spawn(run(reconciler, rx, publish));
    Ok((InventoryTask { events: tx, task }, subscribe))
}

fn task_failed(what: &'static str, e: tokio::task::JoinError) -> InventoryError {
    InventoryError::Task {
        what,
        message: e.to_string(),
    }
}

/// Take the link states of rtnetlink's first dump (a second at most); returns the other
/// events that came meanwhile.
async fn first_link_dump(links: &mut LinkStates, rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut early = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Link { name, live }) => {
                    health::update_link(links, name, live);
                }
                Some(Event::LinksDumped) | None => return early,
                Some(other) => early.push(other),
            },
            _ = &mut deadline => return early,
        }
    }
}

/// Events in batches, each batch applied in the blocking pool, each change published.
async fn run(
    mut reconciler: Reconciler,
    mut rx: mpsc::Receiver<Event>,
    publish: tokio::sync::watch::Sender<Arc<Inventory>>,
) {
    while let Some(first) = rx.recv().await {
        if matches!(first, Event::Rescan { .. }) {
            // Creating 127 VFs is a burst of uevents: let it land, then read sysfs once.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut batch = vec![first];
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        let work = move || {
            let out =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reconciler.apply(batch)));
            (reconciler, out)
        };
        let out;
        (reconciler, out) = match tokio::task::spawn_blocking(work).await {
            Ok(r) => r,
            Err(e) => {
                // Only a cancelled runtime gets here (panics are caught above).
                error!("inventory stopped: {e}");
                return;
            }
        };
        match out {
            Ok(Some(inventory)) => {
                publish.send_replace(inventory);
            }
            Ok(None) => {}
            Err(_) => error!("applying inventory events panicked; keeping the last inventory"),
        }
    }
}
