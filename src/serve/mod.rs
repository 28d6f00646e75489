//! `nicplug serve`: one kubelet device plugin per pool, kept in step with the host.
//!
//! The manager owns the last good config, the host snapshot and the live link states; every
//! change rebuilds the pools (pure) and hands each pool's endpoint a fresh [`PoolView`]. Edges
//! (gRPC endpoints, watchers) own no logic.

mod counters;
mod health;
mod http;
mod metrics;
mod plugin;
mod podresources;
mod preferred;
mod probe;
mod server;
mod stats;
mod view;
mod watch;

pub use health::{LinkStates, healthy};
pub use preferred::preferred;
pub use probe::probe;
pub use server::socket_name;
pub use stats::Stats;
pub use view::{Advertised, AllocError, PoolView};

use crate::HostPaths;
use crate::cdi;
use crate::config::{self, Config, ConfigError};
use crate::host::{self, DiscoverError, Host, Scope, Skipped};
use crate::pools;
use server::PoolEndpoint;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use watch::Event;

/// Everything `serve` needs, from the command line.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub paths: HostPaths,
    pub config_path: PathBuf,
    pub default_prefix: String,
    /// Safety-net rescan period; events do the real work.
    pub rescan_interval: Duration,
    /// Write CNI device-info files into `paths.device_info_dir`.
    pub device_info: bool,
    /// CDI mode, with this `cdiVersion`: a spec per pool in `paths.cdi_dir` (rewritten when the
    /// pool changes, removed with the pool and on exit), and Allocate answers `cdi_devices`
    /// plus the usual `envs` instead of `devices` and `mounts`. `None`: no CDI at all.
    pub cdi_version: Option<String>,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this address; `None`: no
    /// metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve `/healthz` and `/readyz` alone on this address; `None`: none.
    pub health_addr: Option<SocketAddr>,
    /// Kubelet's pod resources socket, asked at each scrape who holds which device.
    pub pod_resources_socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Run until SIGTERM, SIGINT, SIGHUP or SIGQUIT; then stop every endpoint and remove its
/// socket.
pub async fn run(opts: ServeOptions) -> Result<(), ServeError> {
    let started = Instant::now();
    let plugin_dir = opts.paths.kubelet_dir.join("device-plugins");
    let io_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ServeError::Io { path, source }
    };
    std::fs::create_dir_all(&plugin_dir).map_err(io_err(&plugin_dir))?;
    let config_bytes = std::fs::read(&opts.config_path).map_err(io_err(&opts.config_path))?;
    let config =
        config::parse_config_file(&opts.config_path).map_err(|source| ServeError::Config {
            path: opts.config_path.clone(),
            source,
        })?;

    let stats = Arc::new(Stats::default());
    stats.config_loaded(true, false);
    stats.set_kubelet_socket(plugin_dir.join("kubelet.sock"));
    let (views, views_rx) = tokio::sync::watch::channel(BTreeMap::new());
    // Bound before anything else starts: a taken port is an error now, not a silent task death.
    let metrics = match opts.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Metrics { addr, source })?;
            let source = http::MetricsSource::new(
                views_rx.clone(),
                stats.clone(),
                opts.pod_resources_socket.clone(),
                opts.paths.sysfs_root.clone(),
            );
            info!(addr = %listener.local_addr().unwrap_or(addr), "metrics at /metrics, health at /healthz and /readyz");
            Some(tokio::spawn(http::serve(listener, Arc::new(source))))
        }
        None => None,
    };
    let health = match opts.health_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Metrics { addr, source })?;
            let source = http::MetricsSource::health_only(views_rx, stats.clone());
            info!(addr = %listener.local_addr().unwrap_or(addr), "health at /healthz and /readyz");
            Some(tokio::spawn(http::serve(listener, Arc::new(source))))
        }
        None => None,
    };

    let (tx, mut rx) = mpsc::channel(1024);
    // Watch before the first read, so nothing can change unseen in between.
    watch::plugin_dir(&plugin_dir, tx.clone());
    watch::config_dir(&opts.config_path, tx.clone());
    watch::sysfs_tree(&opts.paths.sysfs_root, tx.clone());
    watch::uevents(tx.clone());
    let links_watched = watch::links(tx.clone());
    watch::periodic(opts.rescan_interval, tx.clone());

    let host = host::discover(&opts.paths)?;
    log_skipped(&[], &host.skipped);
    let cdi_dir = opts.cdi_version.as_ref().map(|_| {
        let mut dir = cdi::SpecDir::new(&opts.paths.cdi_dir);
        match dir.remove_stale() {
            Ok(gone) if !gone.is_empty() => {
                info!(dir = %dir.dir().display(), files = %gone.join(","), "removed CDI specs of an earlier run")
            }
            Ok(_) => {}
            Err(e) => warn!(dir = %dir.dir().display(), "cannot clean the CDI spec directory: {e}"),
        }
        dir
    });
    let mut mgr = Manager {
        cdi_dir,
        cdi_retry: false,
        paths: Arc::new(opts.paths.clone()),
        plugin_dir,
        host: Arc::new(host),
        links: LinkStates::new(),
        config,
        config_bytes,
        slots: BTreeMap::new(),
        opts,
        stats,
        views,
    };
    // The first views carry live link states, so rtnetlink's first dump changes nothing.
    let early = match links_watched {
        true => mgr.first_link_dump(&mut rx).await,
        false => Vec::new(),
    };
    mgr.rebuild().await;
    for ev in early {
        mgr.handle(ev, &mut rx).await;
    }
    info!(
        pools = mgr.slots.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "serving"
    );

    let mut term = signal(SignalKind::terminate()).map_err(io_err(&PathBuf::from("SIGTERM")))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err(&PathBuf::from("SIGINT")))?;
    // The SR-IOV plugin also stops cleanly on SIGHUP and SIGQUIT; so does nicplug.
    let mut hup = signal(SignalKind::hangup()).map_err(io_err(&PathBuf::from("SIGHUP")))?;
    let mut quit = signal(SignalKind::quit()).map_err(io_err(&PathBuf::from("SIGQUIT")))?;
    loop {
        tokio::select! {
            Some(ev) = rx.recv() => mgr.handle(ev, &mut rx).await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => break,
            _ = quit.recv() => break,
        }
    }
    info!("shutting down");
    for task in [metrics, health].into_iter().flatten() {
        task.abort();
    }
    mgr.shutdown().await;
    Ok(())
}

struct Slot {
    view: tokio::sync::watch::Sender<Arc<PoolView>>,
    endpoint: Option<PoolEndpoint>,
}

struct Manager {
    opts: ServeOptions,
    paths: Arc<HostPaths>,
    plugin_dir: PathBuf,
    host: Arc<Host>,
    links: LinkStates,
    /// The last good config, and the bytes last read (good or not).
    config: Config,
    config_bytes: Vec<u8>,
    slots: BTreeMap<String, Slot>,
    /// CDI mode: the spec files written.
    cdi_dir: Option<cdi::SpecDir>,
    /// A spec could not be written: try again on the next rescan, even if nothing changed.
    cdi_retry: bool,
    stats: Arc<Stats>,
    /// Every pool's current view, for the metrics endpoint.
    views: tokio::sync::watch::Sender<BTreeMap<String, Arc<PoolView>>>,
}

impl Manager {
    /// Take the link states of rtnetlink's first dump (a second at most); returns the other
    /// events that came meanwhile.
    async fn first_link_dump(&mut self, rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
        let mut early = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Event::Link { name, up: Some(up) }) => {
                        self.links.insert(name, up);
                    }
                    Some(Event::Link { name, up: None }) => {
                        self.links.remove(&name);
                    }
                    Some(Event::LinksDumped) | None => return early,
                    Some(other) => early.push(other),
                },
                _ = &mut deadline => return early,
            }
        }
    }

    async fn handle(&mut self, first: Event, rx: &mut mpsc::Receiver<Event>) {
        let mut batch = vec![first];
        if matches!(batch[0], Event::Rescan { .. }) {
            // Creating 127 VFs is a burst of uevents: let it land, then read sysfs once.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }

        let (mut rescan, mut reload, mut links_changed) = (None::<(&str, Scope)>, false, false);
        for ev in batch {
            match ev {
                Event::PluginDir { name, created } => self.plugin_dir_event(&name, created).await,
                Event::ConfigTouched => reload = true,
                Event::Rescan { why, scope } => {
                    rescan = Some(match rescan {
                        Some((_, seen)) => (why, seen.merge(scope)),
                        None => (why, scope),
                    })
                }
                Event::LinksDumped => {}
                Event::Link { name, up } => {
                    links_changed |= match up {
                        Some(up) => self.links.insert(name, up) != Some(up),
                        None => self.links.remove(&name).is_some(),
                    }
                }
            }
        }
        let config_changed = reload && self.reload_config();
        let rescanned = rescan.is_some();
        let host_changed = match rescan {
            Some((why, scope)) => self.rescan(why, scope).await,
            None => false,
        };
        if config_changed || host_changed || (rescanned && self.cdi_retry) {
            self.rebuild().await;
        } else if links_changed {
            self.refresh_health();
        }
    }

    /// Kubelet deleted our socket (it restarts) or came back: serve again and register again.
    async fn plugin_dir_event(&mut self, name: &str, created: bool) {
        if created && name == "kubelet.sock" {
            info!("kubelet socket appeared; registering every pool again");
            for (resource, slot) in &mut self.slots {
                match &slot.endpoint {
                    Some(ep) if ep.socket_exists() => ep.reregister.notify_one(),
                    _ => restart(&self.plugin_dir, resource, slot, &self.opts, &self.stats).await,
                }
            }
            return;
        }
        if created {
            return;
        }
        for (resource, slot) in &mut self.slots {
            let ours = slot
                .endpoint
                .as_ref()
                .is_some_and(|ep| ep.socket.file_name().and_then(|n| n.to_str()) == Some(name));
            if ours
                && !slot
                    .endpoint
                    .as_ref()
                    .is_some_and(PoolEndpoint::socket_exists)
            {
                info!(%resource, "plugin socket removed (kubelet restart?); serving again");
                restart(&self.plugin_dir, resource, slot, &self.opts, &self.stats).await;
            }
        }
    }

    /// Re-read the config if its bytes changed; true when a new good config was taken.
    fn reload_config(&mut self) -> bool {
        let path = &self.opts.config_path;
        let Ok(bytes) = std::fs::read(path) else {
            // Mid-swap, or gone: keep the last good config; the next event retries.
            return false;
        };
        if bytes == self.config_bytes {
            return false;
        }
        self.config_bytes = bytes;
        match config::parse_config_file(path) {
            Ok(config) => {
                info!(config = %path.display(), resources = config.resources.len(), "config reloaded");
                self.stats.config_loaded(true, true);
                self.config = config;
                true
            }
            Err(e) => {
                error!(config = %path.display(), "config rejected; still serving the last good config:\n{e}");
                self.stats.config_loaded(false, true);
                false
            }
        }
    }

    /// Read sysfs again, only `scope` of it when the event said; true when the snapshot changed.
    async fn rescan(&mut self, why: &str, scope: Scope) -> bool {
        let (paths, old) = (self.paths.clone(), self.host.clone());
        let read = match &scope {
            Scope::All => "full".to_string(),
            Scope::Functions(f) => format!("{} function(s)", f.len()),
        };
        let reread = move || host::reread(&paths, &old, &scope);
        let host = match tokio::task::spawn_blocking(reread).await {
            Ok(Ok(host::Reread::Same)) => return false,
            Ok(Ok(host::Reread::Changed(h))) => h,
            Ok(Err(e)) => {
                error!("rescan ({why}) failed; keeping the last snapshot: {e}");
                return false;
            }
            Err(e) => {
                error!("rescan ({why}) panicked: {e}");
                return false;
            }
        };
        log_skipped(&self.host.skipped, &host.skipped);
        info!(why, %read, functions = host.functions.len(), "host changed");
        self.host = Arc::new(host);
        true
    }

    /// Pools from the current config and snapshot; start, update or stop endpoints to match.
    async fn rebuild(&mut self) {
        let built = pools::build(&self.host, &self.config, &self.opts.default_prefix);
        let mut wanted = BTreeMap::new();
        self.cdi_retry = false;
        for pool in built.pools {
            let mut view = PoolView::new(pool, self.host.clone(), self.paths.clone(), &self.links);
            // The spec is on disk before any Allocate can name its devices.
            if let (Some(dir), Some(version)) = (&mut self.cdi_dir, &self.opts.cdi_version) {
                match publish_cdi(dir, version, &view) {
                    Ok(published) => view.cdi = published,
                    Err(WriteFailed) => self.cdi_retry = true,
                }
            }
            wanted.insert(view.pool.name.clone(), Arc::new(view));
        }
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for resource in gone {
            if let Some(slot) = self.slots.remove(&resource) {
                info!(%resource, "resource removed from config; stopping its endpoint");
                stop(slot).await;
            }
        }
        for (resource, view) in wanted {
            match self.slots.get_mut(&resource) {
                Some(slot) => {
                    slot.view.send_replace(view);
                    if slot.endpoint.is_none() {
                        restart(&self.plugin_dir, &resource, slot, &self.opts, &self.stats).await;
                    }
                }
                None => {
                    self.stats.pool_seen(&resource);
                    let (tx, _) = tokio::sync::watch::channel(view);
                    let mut slot = Slot {
                        view: tx,
                        endpoint: None,
                    };
                    restart(
                        &self.plugin_dir,
                        &resource,
                        &mut slot,
                        &self.opts,
                        &self.stats,
                    )
                    .await;
                    self.slots.insert(resource, slot);
                }
            }
        }
        // Specs of resources gone from the config, or left without devices.
        if let Some(dir) = &mut self.cdi_dir {
            let keep = self
                .slots
                .iter()
                .filter(|(_, s)| s.view.borrow().cdi.is_some())
                .map(|(resource, _)| cdi::file_name(resource))
                .collect();
            match dir.retain(&keep) {
                Ok(gone) => {
                    for file in gone {
                        info!(dir = %dir.dir().display(), %file, "CDI spec removed");
                    }
                }
                Err(e) => error!(dir = %dir.dir().display(), "cannot remove a CDI spec: {e}"),
            }
        }
        self.publish_views();
    }

    /// Hand the metrics endpoint the views now served.
    fn publish_views(&self) {
        let views = self
            .slots
            .iter()
            .map(|(resource, slot)| (resource.clone(), slot.view.borrow().clone()))
            .collect();
        self.views.send_replace(views);
        self.stats.set_pools(
            self.slots
                .iter()
                .map(|(resource, slot)| (resource.clone(), slot.endpoint.is_some())),
        );
    }

    /// Same pools, new link states.
    fn refresh_health(&mut self) {
        for slot in self.slots.values() {
            let (pool, published) = {
                let old = slot.view.borrow();
                (old.pool.clone(), old.cdi.clone())
            };
            let mut view = PoolView::new(pool, self.host.clone(), self.paths.clone(), &self.links);
            view.cdi = published;
            slot.view.send_replace(Arc::new(view));
        }
        self.publish_views();
    }

    async fn shutdown(&mut self) {
        for (_, slot) in std::mem::take(&mut self.slots) {
            stop(slot).await;
        }
        if let Some(dir) = &mut self.cdi_dir {
            match dir.remove_all() {
                Ok(gone) => {
                    info!(dir = %dir.dir().display(), files = gone.len(), "CDI specs removed")
                }
                Err(e) => error!(dir = %dir.dir().display(), "cannot remove a CDI spec: {e}"),
            }
        }
    }
}

/// A spec could not be written to disk (Allocate answers without CDI until it can).
struct WriteFailed;

/// Render and write a pool's CDI spec (only when it changed); what Allocate may then name.
/// `None` (Allocate answers without CDI) when the pool has no spec.
fn publish_cdi(
    dir: &mut cdi::SpecDir,
    version: &str,
    view: &PoolView,
) -> Result<Option<Arc<cdi::Published>>, WriteFailed> {
    let resource = &view.pool.name;
    let (spec, skipped) = match cdi::spec(&view.pool, &view.host, &view.paths, version) {
        Ok(s) => s,
        Err(cdi::CdiError::NoDevices { .. }) => return Ok(None),
        Err(e) => {
            warn!(%resource, "no CDI spec; Allocate answers with devices and mounts: {e}");
            return Ok(None);
        }
    };
    for s in skipped {
        warn!(%resource, id = %s.id, "left out of the CDI spec: {}", s.why);
    }
    let file = cdi::file_name(resource);
    match dir.write(&file, cdi::to_json(&spec).as_bytes()) {
        Ok(true) => {
            info!(%resource, dir = %dir.dir().display(), %file, devices = spec.devices.len(), "CDI spec written")
        }
        Ok(false) => {}
        Err(e) => {
            error!(%resource, dir = %dir.dir().display(), %file, "cannot write the CDI spec; Allocate answers with devices and mounts until a rescan can: {e}");
            return Err(WriteFailed);
        }
    }
    Ok(Some(Arc::new(cdi::Published::of(&spec))))
}

/// (Re)start a slot's endpoint on a fresh socket.
async fn restart(
    plugin_dir: &std::path::Path,
    resource: &str,
    slot: &mut Slot,
    opts: &ServeOptions,
    stats: &Arc<Stats>,
) {
    if let Some(old) = slot.endpoint.take() {
        old.stop().await;
    }
    let info_dir = opts.device_info.then(|| opts.paths.device_info_dir.clone());
    match PoolEndpoint::start(
        plugin_dir,
        resource,
        slot.view.subscribe(),
        info_dir,
        stats.clone(),
    ) {
        Ok(ep) => slot.endpoint = Some(ep),
        // Retried on the next rebuild (any event, at worst the periodic rescan).
        Err(e) => {
            error!(%resource, dir = %plugin_dir.display(), "cannot serve the plugin socket: {e}")
        }
    }
}

async fn stop(slot: Slot) {
    // Dropping the view sender ends the pool's ListAndWatch streams.
    let Slot { view, endpoint } = slot;
    drop(view);
    if let Some(ep) = endpoint {
        ep.stop().await;
    }
}

/// Warn about functions newly skipped; say when one recovers.
fn log_skipped(before: &[Skipped], now: &[Skipped]) {
    for s in now.iter().filter(|s| !before.contains(s)) {
        warn!(function = %s.address, file = %s.file.display(), "skipping function: {}", s.reason);
    }
    for s in before
        .iter()
        .filter(|b| !now.iter().any(|n| n.address == b.address))
    {
        info!(function = %s.address, "function readable again");
    }
}
