//! `nicplug serve`: one kubelet device plugin per pool, kept in step with the host.
//!
//! The manager owns the last good config, the host snapshot and the live link states; every
//! change rebuilds the pools (pure) and hands each pool's endpoint a fresh [`PoolView`]. Edges
//! (gRPC endpoints, watchers) own no logic.

mod counters;
mod holders;
mod http;
mod lock;
mod metrics;
mod plugin;
mod podresources;
mod preferred;
mod probe;
mod server;
mod stats;
mod view;
pub mod watch;

pub use crate::health::LinkStates;
pub use preferred::preferred;
pub use probe::probe;
pub use server::socket_name;
pub use stats::Stats;
pub use view::{Advertised, AllocError, PoolView};

use crate::HostPaths;
use crate::cdi;
use crate::config::{self, Config, ConfigError};
use crate::host::{self, DiscoverError, Host, Scope, Skipped};
use crate::identity;
use crate::pools;
use holders::Holders;
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
    #[error("config {path}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
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
    raise_fd_limit();
    let plugin_dir = opts.paths.kubelet_dir.join("device-plugins");
    let io_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ServeError::Io { path, source }
    };
    std::fs::create_dir_all(&plugin_dir).map_err(io_err(&plugin_dir))?;
    // Before anything is touched: a second daemon must leave the first one's files alone.
    let _lock = lock::lock_dir(&plugin_dir)?;
    clean_up_after_earlier_runs(&opts, &plugin_dir);
    let checks = IdentityChecks {
        default_prefix: opts.default_prefix.clone(),
        plugin_dir: plugin_dir.clone(),
    };
    let (config_bytes, config) = match load_config(opts.config_path.clone(), None, checks).await {
        Load::Unreadable(source)
        | Load::Read {
            parsed: Err(source),
            ..
        } => {
            return Err(ServeError::Config {
                path: opts.config_path.clone(),
                source,
            });
        }
        Load::Unchanged => unreachable!("nothing to compare with"),
        Load::Read {
            bytes,
            parsed: Ok(config),
        } => (bytes, config),
    };
    let holders = Arc::new(Holders::load(Some(plugin_dir.join(holders::STATE_FILE))));
    tokio::spawn(holders.clone().poll(opts.pod_resources_socket.clone()));

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
                holders.clone(),
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
            let source = http::MetricsSource::health_only(views_rx, stats.clone(), holders.clone());
            info!(addr = %listener.local_addr().unwrap_or(addr), "health at /healthz and /readyz");
            Some(tokio::spawn(http::serve(listener, Arc::new(source))))
        }
        None => None,
    };

    let (tx, mut rx) = mpsc::channel(1024);
    // Watch before the first read, so nothing can change unseen in between.
    watch::plugin_dir(&plugin_dir, tx.clone());
    watch::config_dir(&opts.config_path, tx.clone());
    if opts.cdi_version.is_some() {
        watch::cdi_dir(&opts.paths.cdi_dir, tx.clone());
    }
    watch::sysfs_tree(&opts.paths.sysfs_root, tx.clone());
    watch::uevents(tx.clone());
    let links_watched = watch::links(tx.clone());
    // A shared plugin's `periodicUpdateInterval` only sets this safety net (read at start);
    // its 0 ("never") keeps the command line's, so a lost event is still caught.
    let rescan_every = match config.periodic_update_interval {
        Some(n) if n > 0 => Duration::from_secs(n),
        _ => opts.rescan_interval,
    };
    watch::periodic(rescan_every, tx.clone());

    let paths = opts.paths.clone();
    let host = tokio::task::spawn_blocking(move || host::discover(&paths))
        .await
        .map_err(|e| io_err(&opts.paths.sysfs_root)(std::io::Error::other(e)))??;
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
        holders: holders.clone(),
        blocked: BTreeMap::new(),
    };
    // The first views carry live link states, so rtnetlink's first dump changes nothing.
    let early = match links_watched {
        true => mgr.first_link_dump(&mut rx).await,
        false => Vec::new(),
    };
    mgr.rebuild().await;
    if !early.is_empty() {
        mgr.handle(early, &mut rx).await;
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
            Some(ev) = rx.recv() => mgr.handle(vec![ev], &mut rx).await,
            _ = holders.changed.notified() => mgr.refresh_health(),
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
    /// Who holds which device under which resource.
    holders: Arc<Holders>,
    /// `(resource, id)` advertised Unhealthy because of a claim -> why, as last logged.
    blocked: BTreeMap<(String, String), String>,
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
                    Some(Event::Link { name, live }) => {
                        crate::health::update_link(&mut self.links, name, live);
                    }
                    Some(Event::LinksDumped) | None => return early,
                    Some(other) => early.push(other),
                },
                _ = &mut deadline => return early,
            }
        }
    }

    async fn handle(&mut self, mut batch: Vec<Event>, rx: &mut mpsc::Receiver<Event>) {
        if matches!(batch[0], Event::Rescan { .. }) {
            // Creating 127 VFs is a burst of uevents: let it land, then read sysfs once.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }

        let (mut rescan, mut reload, mut links_changed) = (None::<(&str, Scope)>, false, false);
        let mut cdi_touched = false;
        for ev in batch {
            match ev {
                Event::PluginDir { name, created } => self.plugin_dir_event(&name, created).await,
                Event::PluginDirLost => self.plugin_dir_lost().await,
                Event::ConfigTouched => reload = true,
                Event::CdiTouched => cdi_touched = true,
                Event::Rescan { why, scope } => {
                    rescan = Some(match rescan {
                        Some((_, seen)) => (why, seen.merge(scope)),
                        None => (why, scope),
                    })
                }
                Event::LinksDumped => {}
                Event::Link { name, live } => {
                    links_changed |= crate::health::update_link(&mut self.links, name, live)
                }
            }
        }
        let config_changed = reload && self.reload_config().await;
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
        if cdi_touched || rescanned {
            self.repair_cdi().await;
        }
    }

    /// Write again any spec someone else changed or removed: Allocate names them.
    async fn repair_cdi(&mut self) {
        self.in_cdi_dir("repairing CDI specs", |dir| match dir.repair() {
            Ok(names) => {
                for file in names {
                    warn!(dir = %dir.dir().display(), %file, "CDI spec changed or removed by someone else; written again");
                }
            }
            Err(e) => error!(dir = %dir.dir().display(), "cannot write a CDI spec again: {e}"),
        })
        .await;
    }

    /// Run `f` on the CDI spec directory in the blocking pool (file I/O never runs on the
    /// threads that answer kubelet), then keep the directory for the next time.
    async fn in_cdi_dir(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut cdi::SpecDir) + Send + 'static,
    ) {
        let Some(mut dir) = self.cdi_dir.take() else {
            return;
        };
        let work = move || {
            f(&mut dir);
            dir
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(dir) => self.cdi_dir = Some(dir),
            Err(e) => error!("{what} panicked: {e}"),
        }
    }

    /// Events of the device-plugins directory were lost: serve every socket that is gone,
    /// register with a new kubelet if there is one, write the allocation record again.
    async fn plugin_dir_lost(&mut self) {
        for (resource, slot) in &mut self.slots {
            match &slot.endpoint {
                Some(ep) if ep.socket_exists() => ep.reregister.notify_one(),
                _ => {
                    info!(%resource, "plugin socket missing; serving again");
                    restart(
                        &self.plugin_dir,
                        resource,
                        slot,
                        &self.opts,
                        &self.stats,
                        &self.holders,
                    )
                    .await
                }
            }
        }
        self.holders.persist().await;
    }

    /// Kubelet deleted our socket (it restarts) or came back: serve again and register again.
    async fn plugin_dir_event(&mut self, name: &str, created: bool) {
        if created && name == "kubelet.sock" {
            info!("kubelet socket appeared; registering every pool again");
            for (resource, slot) in &mut self.slots {
                match &slot.endpoint {
                    Some(ep) if ep.socket_exists() => ep.reregister.notify_one(),
                    _ => {
                        restart(
                            &self.plugin_dir,
                            resource,
                            slot,
                            &self.opts,
                            &self.stats,
                            &self.holders,
                        )
                        .await
                    }
                }
            }
            return;
        }
        if created {
            return;
        }
        if name == holders::STATE_FILE {
            // A kubelet restart empties the directory: write the record again.
            self.holders.persist().await;
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
                restart(
                    &self.plugin_dir,
                    resource,
                    slot,
                    &self.opts,
                    &self.stats,
                    &self.holders,
                )
                .await;
            }
        }
    }

    /// Re-read the config if its bytes changed; true when a new good config was taken. Read
    /// once and parsed from those bytes, off the runtime threads.
    async fn reload_config(&mut self) -> bool {
        let path = self.opts.config_path.clone();
        let checks = IdentityChecks {
            default_prefix: self.opts.default_prefix.clone(),
            plugin_dir: self.plugin_dir.clone(),
        };
        let (bytes, parsed) =
            match load_config(path.clone(), Some(self.config_bytes.clone()), checks).await {
                // Mid-swap, or gone: keep the last good config; the next event retries.
                Load::Unreadable(_) | Load::Unchanged => return false,
                Load::Read { bytes, parsed } => (bytes, parsed),
            };
        self.config_bytes = bytes;
        match parsed {
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
        let claims = self.holders.claims();
        let mut views: Vec<PoolView> = built
            .pools
            .into_iter()
            .map(|pool| {
                let mut view =
                    PoolView::new(pool, self.host.clone(), self.paths.clone(), &self.links);
                view.hold(&claims);
                view
            })
            .collect();
        self.cdi_retry = false;
        // The specs are on disk before any Allocate can name their devices; written off the
        // runtime threads.
        if let (Some(mut dir), Some(version)) = (self.cdi_dir.take(), self.opts.cdi_version.clone())
        {
            let publish = move || {
                let results: Vec<_> = views
                    .iter()
                    .map(|view| publish_cdi(&mut dir, &version, view))
                    .collect();
                (dir, views, results)
            };
            let (dir, mut back, results) = match tokio::task::spawn_blocking(publish).await {
                Ok(r) => r,
                Err(e) => {
                    error!("writing CDI specs panicked: {e}");
                    return;
                }
            };
            self.cdi_dir = Some(dir);
            for (view, result) in back.iter_mut().zip(results) {
                match result {
                    Ok(published) => view.cdi = published,
                    Err(WriteFailed) => self.cdi_retry = true,
                }
            }
            views = back;
        }
        self.log_blocked(&views);
        let wanted: BTreeMap<String, Arc<PoolView>> = views
            .into_iter()
            .map(|v| (v.pool.name.clone(), Arc::new(v)))
            .collect();
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
                    view::log_health_changes(&slot.view.send_replace(view.clone()), &view);
                    if slot.endpoint.is_none() {
                        restart(
                            &self.plugin_dir,
                            &resource,
                            slot,
                            &self.opts,
                            &self.stats,
                            &self.holders,
                        )
                        .await;
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
                        &self.holders,
                    )
                    .await;
                    self.slots.insert(resource, slot);
                }
            }
        }
        // Specs of resources gone from the config, or left without devices.
        let keep = self
            .slots
            .iter()
            .filter(|(_, s)| s.view.borrow().cdi.is_some())
            .map(|(resource, _)| cdi::file_name(resource))
            .collect();
        self.in_cdi_dir("removing CDI specs", move |dir| match dir.retain(&keep) {
            Ok(gone) => {
                for file in gone {
                    info!(dir = %dir.dir().display(), %file, "CDI spec removed");
                }
            }
            Err(e) => error!(dir = %dir.dir().display(), "cannot remove a CDI spec: {e}"),
        })
        .await;
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

    /// Same pools, new link states or claims.
    fn refresh_health(&mut self) {
        let claims = self.holders.claims();
        let mut views = Vec::with_capacity(self.slots.len());
        for slot in self.slots.values() {
            let (pool, published) = {
                let old = slot.view.borrow();
                (old.pool.clone(), old.cdi.clone())
            };
            let mut view = PoolView::new(pool, self.host.clone(), self.paths.clone(), &self.links);
            view.cdi = published;
            view.hold(&claims);
            views.push(view);
        }
        self.log_blocked(&views);
        for (slot, view) in self.slots.values().zip(views) {
            let view = Arc::new(view);
            view::log_health_changes(&slot.view.send_replace(view.clone()), &view);
        }
        self.publish_views();
    }

    /// Say which devices a claim keeps Unhealthy, once per change; tell the poller whether
    /// any waits for kubelet's release.
    fn log_blocked(&mut self, views: &[PoolView]) {
        let mut now = BTreeMap::new();
        for v in views {
            for (id, other) in &v.held_elsewhere {
                now.insert(
                    (v.pool.name.clone(), id.clone()),
                    format!("held under {other}"),
                );
            }
            for id in &v.ghosts {
                now.insert(
                    (v.pool.name.clone(), id.clone()),
                    "allocated, and gone from the pool".to_string(),
                );
            }
        }
        for ((resource, id), why) in &now {
            if self.blocked.get(&(resource.clone(), id.clone())) != Some(why) {
                warn!(%resource, %id, "advertised Unhealthy until kubelet releases it: {why}");
            }
        }
        for (resource, id) in self.blocked.keys().filter(|k| !now.contains_key(*k)) {
            info!(%resource, %id, "released by kubelet; advertised by its health again");
        }
        self.holders.set_pending(!now.is_empty());
        self.blocked = now;
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
    holders: &Arc<Holders>,
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
        holders.clone(),
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

/// Descriptors for every plugin socket and kubelet's connections: the soft limit up to the hard
/// one (the metrics endpoint caps its own share far below either).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let from = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => info!(from = ?from, to = ?limit.maximum, "raised the open file limit"),
            Err(e) => warn!("cannot raise the open file limit: {e}"),
        }
    }
}

/// What a killed daemon leaves behind: plugin sockets (`nicplug probe` would fail on them
/// forever) and temp files of interrupted writes. Only called with the directory lock held.
fn clean_up_after_earlier_runs(opts: &ServeOptions, plugin_dir: &std::path::Path) {
    match lock::remove_stale_sockets(plugin_dir) {
        Ok(gone) if !gone.is_empty() => {
            info!(dir = %plugin_dir.display(), sockets = %gone.join(","), "removed sockets of an earlier run")
        }
        Ok(_) => {}
        Err(e) => warn!(dir = %plugin_dir.display(), "cannot clean the plugin directory: {e}"),
    }
    if opts.device_info {
        let dir = &opts.paths.device_info_dir;
        match crate::files::remove_stale_temps(dir) {
            Ok(gone) if !gone.is_empty() => {
                info!(dir = %dir.display(), files = %gone.join(","), "removed temp files of an earlier run")
            }
            Ok(_) => {}
            Err(e) => warn!(dir = %dir.display(), "cannot clean the device-info directory: {e}"),
        }
    }
}

/// What reading the config file gave.
enum Load {
    Unreadable(ConfigError),
    /// The same bytes as last time.
    Unchanged,
    Read {
        bytes: Vec<u8>,
        parsed: Result<Config, ConfigError>,
    },
}

/// Read the config file once and parse those very bytes, off the runtime threads: a swap
/// between a read and a parse can no longer serve a file that is not on disk.
/// Bounded and never blocking on a planted FIFO ([`config::read_config_bytes`]); the identity
/// rules are checked on the same thread.
async fn load_config(path: PathBuf, last: Option<Vec<u8>>, checks: IdentityChecks) -> Load {
    let read = move || {
        let bytes = match config::read_config_bytes(&path) {
            Ok(b) => b,
            Err(e) => return Load::Unreadable(e),
        };
        if last.as_deref() == Some(&bytes[..]) {
            return Load::Unchanged;
        }
        let parsed = config::parse_config_bytes(&path, bytes.clone()).and_then(|c| {
            identity::check(&c, &checks.default_prefix, &checks.plugin_dir).map(|()| c)
        });
        Load::Read { bytes, parsed }
    };
    tokio::task::spawn_blocking(read).await.unwrap_or_else(|e| {
        Load::Unreadable(ConfigError::Read {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// What the identity rules need besides the config.
struct IdentityChecks {
    default_prefix: String,
    plugin_dir: PathBuf,
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
