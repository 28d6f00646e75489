//! `nicplug serve`: one kubelet device plugin per pool, a subscriber of the inventory.
//!
//! The inventory ([`crate::inventory`]) keeps the config, the host snapshot, link states,
//! health and claims current and publishes one immutable [`Inventory`] after each change. The
//! manager here only publishes it to kubelet: a plugin endpoint per pool (socket,
//! registration, ListAndWatch), the CDI spec files and the readiness. Its own events are
//! kubelet's directory (a restart deletes our sockets) and the CDI directory.

mod holders;
mod http;
mod lock;
mod metrics;
mod plugin;
mod podresources;
mod probe;
mod server;
mod stats;
mod watch;

pub use probe::probe;
pub use server::socket_name;
pub use stats::Stats;

use crate::HostPaths;
use crate::cdi;
use crate::identity;
use crate::inventory::{
    self, ConfigReloads, Inventory, InventoryError, InventoryOptions, InventoryTask, PoolView,
};
use holders::Holders;
use server::{PoolEndpoint, Registration};
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
    /// Safety-net rescan period; events do the real work. Also how often a CDI spec that
    /// could not be written is tried again.
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
    #[error(transparent)]
    Inventory(#[from] InventoryError),
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

/// What one pool's endpoint serves: the inventory's view of the pool, and in CDI mode the
/// spec written for it (Allocate names its devices; `None`: answer without CDI).
#[derive(Debug)]
pub struct Served {
    pub view: Arc<PoolView>,
    pub cdi: Option<Arc<cdi::Published>>,
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
    let holders = Arc::new(Holders::load(Some(plugin_dir.join(holders::STATE_FILE))));
    // Devices a nicplug DRA driver on this node prepared for claims are never handed out here
    // (one front end per node is the rule; this guards against both running by mistake).
    let dra_dir = opts
        .paths
        .kubelet_dir
        .join("plugins")
        .join(crate::dra::model::DRIVER);
    let d = dra_dir.clone();
    match tokio::task::spawn_blocking(move || holders::dra_held(&d)).await {
        Ok(Ok(held)) => {
            holders.set_dra(held);
        }
        Ok(Err(e)) => warn!("{e}; devices of DRA claims are not known yet"),
        Err(e) => warn!("reading the DRA checkpoint: {e}"),
    }

    // Watch before the first read, so nothing can change unseen in between.
    let (tx, mut rx) = mpsc::channel(1024);
    watch::plugin_dir(&plugin_dir, tx.clone());
    if opts.cdi_version.is_some() {
        watch::cdi_dir(&opts.paths.cdi_dir, tx.clone());
    }
    // Every pool needs a plugin socket name that fits: a config without is refused.
    let (prefix, dir) = (opts.default_prefix.clone(), plugin_dir.clone());
    let inventory_opts = InventoryOptions {
        rescan_interval: opts.rescan_interval,
        claims: holders.claims(),
        config_check: Some(Arc::new(move |c| identity::check(c, &prefix, &dir))),
        ..InventoryOptions::new(
            opts.paths.clone(),
            opts.config_path.clone(),
            opts.default_prefix.clone(),
        )
    };
    let (inventory, mut inventory_rx) = inventory::start(inventory_opts).await?;
    tokio::spawn(holders.clone().poll(opts.pod_resources_socket.clone()));
    tokio::spawn(holders.clone().follow_dra(dra_dir));

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
    let first = inventory_rx.borrow_and_update().clone();
    let mut mgr = Manager {
        cdi_dir,
        cdi_retry: false,
        kubelet: Arc::new(Registration::new(plugin_dir.join("kubelet.sock"))),
        plugin_dir,
        reloads: first.config_reloads,
        last: None,
        slots: BTreeMap::new(),
        opts,
        stats,
        views,
        holders: holders.clone(),
    };
    mgr.take(first).await;
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
    // CDI specs someone else changed, and ones that could not be written, are seen to at
    // this pace too (besides the CDI directory's own events).
    let mut tick = tokio::time::interval(mgr.opts.rescan_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            changed = inventory_rx.changed() => {
                if changed.is_err() {
                    error!("the inventory stopped; shutting down");
                    break;
                }
                let inv = inventory_rx.borrow_and_update().clone();
                mgr.take(inv).await;
            }
            Some(ev) = rx.recv() => mgr.handle(ev, &mut rx).await,
            _ = holders.changed.notified() => inventory.set_claims(holders.claims()).await,
            _ = tick.tick() => mgr.tick().await,
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
    drop::<InventoryTask>(inventory);
    mgr.shutdown().await;
    Ok(())
}

struct Slot {
    view: tokio::sync::watch::Sender<Arc<Served>>,
    endpoint: Option<PoolEndpoint>,
}

struct Manager {
    opts: ServeOptions,
    plugin_dir: PathBuf,
    /// Kubelet's registration service, shared by the pools' registrars.
    kubelet: Arc<Registration>,
    /// The inventory last taken.
    last: Option<Arc<Inventory>>,
    /// Config reloads counted into the stats so far.
    reloads: ConfigReloads,
    slots: BTreeMap<String, Slot>,
    /// CDI mode: the spec files written.
    cdi_dir: Option<cdi::SpecDir>,
    /// A spec could not be written: try again on the next tick, even if nothing changed.
    cdi_retry: bool,
    stats: Arc<Stats>,
    /// Every pool's current view, for the metrics endpoint.
    views: tokio::sync::watch::Sender<BTreeMap<String, Arc<PoolView>>>,
    /// Who holds which device under which resource.
    holders: Arc<Holders>,
}

impl Manager {
    /// Publish a new inventory: endpoints and CDI specs follow the pools when they were
    /// rebuilt; otherwise each endpoint gets its pool's new health.
    async fn take(&mut self, inv: Arc<Inventory>) {
        let r = inv.config_reloads;
        for _ in self.reloads.ok..r.ok {
            self.stats.config_loaded(true, true);
        }
        for _ in self.reloads.failed..r.failed {
            self.stats.config_loaded(false, true);
        }
        self.reloads = r;
        let rebuilt = self
            .last
            .as_ref()
            .is_none_or(|last| last.pools_generation != inv.pools_generation);
        // Tell the poller whether any device waits for kubelet's release.
        self.holders.set_pending(
            inv.pools
                .values()
                .any(|v| !v.held_elsewhere.is_empty() || !v.ghosts.is_empty()),
        );
        self.last = Some(inv.clone());
        if rebuilt {
            self.rebuild(&inv).await;
        } else {
            self.refresh(&inv);
        }
    }

    async fn handle(&mut self, first: Event, rx: &mut mpsc::Receiver<Event>) {
        let mut batch = vec![first];
        while let Ok(ev) = rx.try_recv() {
            batch.push(ev);
        }
        let mut cdi_touched = false;
        for ev in batch {
            match ev {
                Event::PluginDir { name, created } => self.plugin_dir_event(&name, created).await,
                Event::PluginDirLost => self.plugin_dir_lost().await,
                Event::CdiTouched => cdi_touched = true,
            }
        }
        if cdi_touched {
            self.repair_cdi().await;
        }
    }

    /// The periodic safety net: write again the specs that could not be written, repair
    /// those someone else changed.
    async fn tick(&mut self) {
        if self.cdi_retry
            && let Some(inv) = self.last.clone()
        {
            self.rebuild(&inv).await;
        }
        self.repair_cdi().await;
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
                        &self.kubelet,
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
                            &self.kubelet,
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
                    &self.kubelet,
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

    /// Pools from the inventory; CDI specs written, endpoints started, updated or stopped to
    /// match.
    async fn rebuild(&mut self, inv: &Arc<Inventory>) {
        let views: Vec<Arc<PoolView>> = inv.pools.values().cloned().collect();
        let mut published: Vec<Option<Arc<cdi::Published>>> = vec![None; views.len()];
        self.cdi_retry = false;
        // The specs are on disk before any Allocate can name their devices; written off the
        // runtime threads.
        if let (Some(mut dir), Some(version)) = (self.cdi_dir.take(), self.opts.cdi_version.clone())
        {
            let publish = {
                let views = views.clone();
                move || {
                    let results: Vec<_> = views
                        .iter()
                        .map(|view| publish_cdi(&mut dir, &version, view))
                        .collect();
                    (dir, results)
                }
            };
            let (dir, results) = match tokio::task::spawn_blocking(publish).await {
                Ok(r) => r,
                Err(e) => {
                    error!("writing CDI specs panicked: {e}");
                    return;
                }
            };
            self.cdi_dir = Some(dir);
            for (slot, result) in published.iter_mut().zip(results) {
                match result {
                    Ok(p) => *slot = p,
                    Err(WriteFailed) => self.cdi_retry = true,
                }
            }
        }
        let wanted: BTreeMap<String, Arc<Served>> = views
            .into_iter()
            .zip(published)
            .map(|(view, cdi)| (view.pool.name.clone(), Arc::new(Served { view, cdi })))
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
        for (resource, served) in wanted {
            match self.slots.get_mut(&resource) {
                Some(slot) => {
                    slot.view.send_replace(served);
                    if slot.endpoint.is_none() {
                        restart(
                            &self.plugin_dir,
                            &self.kubelet,
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
                    let (tx, _) = tokio::sync::watch::channel(served);
                    let mut slot = Slot {
                        view: tx,
                        endpoint: None,
                    };
                    restart(
                        &self.plugin_dir,
                        &self.kubelet,
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
            .map(|(resource, slot)| (resource.clone(), slot.view.borrow().view.clone()))
            .collect();
        self.views.send_replace(views);
        self.stats.set_pools(
            self.slots
                .iter()
                .map(|(resource, slot)| (resource.clone(), slot.endpoint.is_some())),
        );
    }

    /// Same pools, new health (link states or claims): each endpoint keeps its CDI spec.
    fn refresh(&mut self, inv: &Inventory) {
        for (resource, slot) in &self.slots {
            let Some(view) = inv.pools.get(resource) else {
                continue;
            };
            if Arc::ptr_eq(&slot.view.borrow().view, view) {
                // The inventory kept the pool's view: its streams have nothing to send.
                continue;
            }
            let cdi = slot.view.borrow().cdi.clone();
            slot.view.send_replace(Arc::new(Served {
                view: view.clone(),
                cdi,
            }));
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
    kubelet: &Arc<Registration>,
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
        kubelet.clone(),
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
