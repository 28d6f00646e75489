//! The DRA driver's kubelet side: the registration socket kubelet's plugin watcher finds in
//! `plugins_registry/`, and the driver socket serving `DRAPlugin` (v1 and v1beta1) and
//! `DRAResourceHealth` (v1alpha1 and v1beta1).
//!
//! Kubelet's plugin watcher and its DRA client dial the socket path with grpc-go's default
//! `passthrough` resolver, so their `:authority` is the socket path percent-encoded
//! (`%2Fvar%2Flib%2Fkubelet%2F...`); older grpc-go and grpcio send the raw path. tonic's
//! HTTP/2 layer refuses both, so every connection goes through [`crate::authority::front`],
//! which sets `:authority: localhost`. `tests/dra/test_registration.py` pins every form.
//!
//! Both sockets are re-created when they vanish (checked twice a second): kubelet finds a
//! registration socket by its directory, so a new one is a new registration.

use super::api::health as health_v1alpha1;
use super::api::health::dra_resource_health_server::{
    DraResourceHealth as DraResourceHealthV1alpha1, DraResourceHealthServer as HealthServerV1alpha1,
};
use super::api::health_v1beta1::dra_resource_health_server::{
    DraResourceHealth, DraResourceHealthServer,
};
use super::api::health_v1beta1::{
    DeviceHealth, DeviceIdentifier, HealthStatus, NodeWatchResourcesRequest,
    NodeWatchResourcesResponse,
};
use super::api::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
    registration_server::{Registration, RegistrationServer},
};
use super::api::{v1, v1beta1};
use super::model::{ClaimRef, DRIVER};
use super::prepare::{ClaimSource, PrepareError, Preparer, check_uid};
use crate::device_id::DeviceId;
use crate::health::Verdict;
use crate::inventory::Inventory;
use crate::paths::HostPaths;
use crate::pools::Pools;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

/// Registration socket file name in `plugins_registry/`.
pub const REGISTRATION_SOCKET: &str = "nicplug.io-reg.sock";
/// Driver socket file name in `plugins/nicplug.io/`.
pub const DRA_SOCKET: &str = "dra.sock";
/// The plugin type kubelet routes to its DRA manager.
pub const PLUGIN_TYPE: &str = "DRAPlugin";
/// Service names kubelet 1.34-1.36 accept in `supported_versions`, newest first.
pub const SUPPORTED_SERVICES: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];
/// Calls at once on one connection: kubelet makes one or two plus the health stream.
const MAX_STREAMS: u32 = 16;

/// What the driver serves from: one inventory of the core, its exclusive pools as prepare
/// takes them and their devices' health (both derived once per inventory, not per call).
#[derive(Debug, Clone)]
pub struct State {
    pub inventory: Arc<Inventory>,
    pub pools: Arc<Pools>,
    /// Device ID -> the device plugin's verdict.
    pub health: Arc<BTreeMap<String, Verdict>>,
}

impl State {
    /// The state of `inv`; the pools of `prev` are kept while the inventory's pools did not
    /// change (a health or claims change).
    pub fn of(inv: Arc<Inventory>, prev: Option<&State>) -> State {
        let pools = match prev {
            Some(p) if p.inventory.pools_generation == inv.pools_generation => p.pools.clone(),
            _ => Arc::new(Pools {
                pools: super::inventory::exclusive(&inv).cloned().collect(),
                placements: BTreeMap::new(),
            }),
        };
        State {
            health: Arc::new(super::inventory::health(&inv)),
            pools,
            inventory: inv,
        }
    }
}

/// Everything `nicplug dra` is told on its command line.
#[derive(Debug, Clone)]
pub struct DraOptions {
    pub paths: HostPaths,
    /// Kubelet's `plugins_registry/` directory.
    pub registry_dir: PathBuf,
    /// Kubelet's `plugins/` directory; the driver's own is `<it>/nicplug.io`.
    pub plugins_dir: PathBuf,
    /// The node's name: the ResourceSlice pool nicplug publishes its devices in.
    pub node_name: String,
    pub cdi_version: String,
    pub device_info: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DraError {
    #[error("{path}: {why}")]
    Dir { path: PathBuf, why: String },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

/// A directory kubelet reads, created if missing; a link or a file in its place is refused
/// (nicplug would bind or write through it).
fn ensure_dir(path: &Path, mode: u32) -> Result<(), DraError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(DraError::Dir {
                path: path.to_path_buf(),
                why: "exists and is not a directory (a link or a file); fix: remove it".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(DraError::Io {
                path: path.to_path_buf(),
                err: source,
            });
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DraError::Io {
            path: parent.to_path_buf(),
            err: source,
        })?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| DraError::Io {
                path: path.to_path_buf(),
                err: source,
            },
        ),
        // Someone made it meanwhile: check what it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ensure_dir(path, mode),
        Err(source) => Err(DraError::Io {
            path: path.to_path_buf(),
            err: source,
        }),
    }
}

/// Bind a fresh socket at `path` (0600: only kubelet, root, talks to it), replacing a stale
/// one; `remove_file` unlinks whatever stands there, never what a link points to.
fn bind(path: &Path) -> std::io::Result<(UnixListener, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let old_mask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old_mask);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let m = std::fs::symlink_metadata(path)?;
    Ok((listener, (m.dev(), m.ino())))
}

fn socket_ident(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| (m.dev(), m.ino()))
}

// ------------------------------------------------------------------ registration

#[derive(Clone)]
struct RegistrationService {
    endpoint: String,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: PLUGIN_TYPE.into(),
            name: DRIVER.into(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_SERVICES.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        r: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let r = r.into_inner();
        if r.plugin_registered {
            info!(driver = DRIVER, "registered with kubelet");
        } else {
            error!(
                driver = DRIVER,
                "kubelet refused the registration: {}", r.error
            );
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

// ------------------------------------------------------------------ DRA plugin

#[derive(Clone)]
struct DraService {
    preparer: Arc<Preparer>,
    state: watch::Receiver<Arc<State>>,
    source: Arc<dyn ClaimSource>,
}

impl DraService {
    async fn prepare_one(&self, c: v1::Claim) -> v1::NodePrepareResourceResponse {
        match self.try_prepare(c).await {
            Ok(devices) => v1::NodePrepareResourceResponse {
                devices,
                error: String::new(),
            },
            Err(e) => v1::NodePrepareResourceResponse {
                devices: Vec::new(),
                error: e,
            },
        }
    }

    async fn try_prepare(&self, c: v1::Claim) -> Result<Vec<v1::Device>, String> {
        check_uid(&c.uid).map_err(|e| e.to_string())?;
        let claim = ClaimRef {
            namespace: c.namespace,
            name: c.name,
            uid: c.uid,
        };
        let alloc = self
            .source
            .allocation(&claim)
            .await
            .map_err(|e| format!("claim {}/{}: {e}", claim.namespace, claim.name))?;
        let state = self.state.borrow().clone();
        let preparer = self.preparer.clone();
        let started = std::time::Instant::now();
        let devices = tokio::task::spawn_blocking(move || {
            preparer.prepare(&alloc, &state.inventory.host, &state.pools, &state.health)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            warn!(claim = %claim.uid, "prepare failed: {e}");
            format!("claim {}/{}: {e}", claim.namespace, claim.name)
        })?;
        info!(claim = %claim.uid, devices = devices.len(), elapsed_us = started.elapsed().as_micros() as u64, "prepared");
        Ok(devices
            .into_iter()
            .map(|d| v1::Device {
                request_names: d.requests,
                pool_name: d.pool,
                device_name: d.device,
                cdi_device_ids: d.cdi_device_ids,
            })
            .collect())
    }

    async fn prepare(
        &self,
        req: v1::NodePrepareResourcesRequest,
    ) -> v1::NodePrepareResourcesResponse {
        let mut out = v1::NodePrepareResourcesResponse::default();
        for c in req.claims {
            let uid = c.uid.clone();
            let r = self.prepare_one(c).await;
            out.claims.insert(uid, r);
        }
        out
    }

    async fn unprepare(
        &self,
        req: v1::NodeUnprepareResourcesRequest,
    ) -> v1::NodeUnprepareResourcesResponse {
        let mut out = v1::NodeUnprepareResourcesResponse::default();
        for c in req.claims {
            let uid = c.uid.clone();
            let preparer = self.preparer.clone();
            let u = uid.clone();
            let r = tokio::task::spawn_blocking(move || {
                // A UID prepare would refuse was never prepared: nothing to undo.
                check_uid(&u).map_or(Ok(()), |()| preparer.unprepare(&u))
            })
            .await;
            let error = match r {
                Ok(Ok(())) => String::new(),
                Ok(Err(e)) => format!("claim {}/{}: {e}", c.namespace, c.name),
                Err(e) => e.to_string(),
            };
            if error.is_empty() {
                info!(claim = %uid, "unprepared");
            } else {
                warn!(claim = %uid, "unprepare failed: {error}");
            }
            out.claims
                .insert(uid, v1::NodeUnprepareResourceResponse { error });
        }
        out
    }
}

#[tonic::async_trait]
impl v1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        r: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        Ok(Response::new(self.prepare(r.into_inner()).await))
    }

    async fn node_unprepare_resources(
        &self,
        r: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        Ok(Response::new(self.unprepare(r.into_inner()).await))
    }
}

/// v1beta1 and v1 are the same messages under two package names: one encodes as the other.
fn recode<A: prost::Message, B: prost::Message + Default>(a: &A) -> B {
    B::decode(a.encode_to_vec().as_slice()).unwrap_or_default()
}

#[tonic::async_trait]
impl v1beta1::dra_plugin_server::DraPlugin for DraService {
    async fn node_prepare_resources(
        &self,
        r: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let answer = self.prepare(recode(r.get_ref())).await;
        Ok(Response::new(recode(&answer)))
    }

    async fn node_unprepare_resources(
        &self,
        r: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let answer = self.unprepare(recode(r.get_ref())).await;
        Ok(Response::new(recode(&answer)))
    }
}

// ------------------------------------------------------------------ health

#[derive(Clone)]
struct HealthService {
    state: watch::Receiver<Arc<State>>,
    node_name: String,
}

/// Health of every device nicplug publishes: the inventory's verdicts (the device plugin's
/// rule, live link states from rtnetlink), the verdict's wording as message.
pub fn health_list(state: &State, node_name: &str) -> Vec<DeviceHealth> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut out = Vec::new();
    for (id, verdict) in state.health.iter() {
        let Some(id) = DeviceId::parse(id) else {
            continue;
        };
        out.push(DeviceHealth {
            device: Some(DeviceIdentifier {
                pool_name: node_name.to_string(),
                device_name: id.dns_label(),
            }),
            health: if verdict.healthy {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            } as i32,
            last_updated_time: now,
            health_check_timeout_seconds: 0,
            message: verdict.to_string(),
        });
    }
    out
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

impl HealthService {
    /// The full list now and again whenever a device's health changes.
    fn watch(&self) -> tokio::sync::mpsc::Receiver<Result<NodeWatchResourcesResponse, Status>> {
        let mut state = self.state.clone();
        let node = self.node_name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<Vec<(String, i32)>> = None;
            loop {
                let list = health_list(&state.borrow_and_update().clone(), &node);
                let key: Vec<(String, i32)> = list
                    .iter()
                    .map(|d| {
                        let name = d.device.as_ref().map(|i| i.device_name.clone());
                        (name.unwrap_or_default(), d.health)
                    })
                    .collect();
                if last.as_ref() != Some(&key) {
                    let msg = NodeWatchResourcesResponse { devices: list };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last = Some(key);
                }
                tokio::select! {
                    r = state.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        rx
    }
}

#[tonic::async_trait]
impl DraResourceHealth for HealthService {
    type NodeWatchResourcesStream = Stream<NodeWatchResourcesResponse>;

    async fn node_watch_resources(
        &self,
        _: Request<NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(self.watch()),
        )))
    }
}

/// v1alpha1 is v1beta1 without the timeout and message (same field numbers).
#[tonic::async_trait]
impl DraResourceHealthV1alpha1 for HealthService {
    type NodeWatchResourcesStream = Stream<health_v1alpha1::NodeWatchResourcesResponse>;

    async fn node_watch_resources(
        &self,
        _: Request<health_v1alpha1::NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        let s = tokio_stream::wrappers::ReceiverStream::new(self.watch())
            .map(|m| m.map(|m| recode(&m)));
        Ok(Response::new(Box::pin(s)))
    }
}

// ------------------------------------------------------------------ sockets

/// One served socket: re-created by [`Served::check`] when it vanished or was replaced.
struct Served {
    path: PathBuf,
    ident: (u64, u64),
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Served {
    fn start(path: &Path, router: tonic::transport::server::Router) -> std::io::Result<Self> {
        let (listener, ident) = bind(path)?;
        let (tx, rx) = oneshot::channel();
        let shown = path.display().to_string();
        // Every connection through the `:authority` front (see the module docs).
        let incoming =
            UnixListenerStream::new(listener).map(|conn| conn.map(crate::authority::front));
        let task = tokio::spawn(async move {
            let r = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                error!(socket = %shown, "server stopped: {e}");
            }
        });
        Ok(Served {
            path: path.to_path_buf(),
            ident,
            shutdown: Some(tx),
            task,
        })
    }

    fn gone(&self) -> bool {
        socket_ident(&self.path) != Some(self.ident)
    }

    async fn stop(mut self, remove: bool) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_millis(200), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
        // Only our own socket: one that replaced it is someone else's.
        if remove && !self.gone() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The driver's paths: (its plugin directory, driver socket, registration socket).
pub fn socket_paths(opts: &DraOptions) -> (PathBuf, PathBuf, PathBuf) {
    let dir = opts.plugins_dir.join(DRIVER);
    let dra = dir.join(DRA_SOCKET);
    (dir, dra, opts.registry_dir.join(REGISTRATION_SOCKET))
}

/// Serve kubelet from the inventory `inventory` until `stop` resolves: the driver socket
/// first, then the registration socket (kubelet dials the driver as soon as it sees the
/// registration).
pub async fn run(
    opts: DraOptions,
    source: Arc<dyn ClaimSource>,
    mut inventory: watch::Receiver<Arc<Inventory>>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DraError> {
    let (dir, dra_path, reg_path) = socket_paths(&opts);
    ensure_dir(&dir, 0o700)?;
    ensure_dir(&opts.registry_dir, 0o750)?;
    for sock in [&dra_path, &reg_path] {
        if sock.as_os_str().len() > crate::identity::SUN_PATH_MAX {
            return Err(DraError::Dir {
                path: sock.clone(),
                why: format!(
                    "longer than the {}-byte limit of a socket path; fix: a shorter directory",
                    crate::identity::SUN_PATH_MAX
                ),
            });
        }
    }
    // Only this driver writes in its own directory: a temp file there is a killed run's.
    if let Err(e) = crate::files::remove_stale_temps(&dir) {
        warn!(dir = %dir.display(), "cannot remove stale temp files: {e}");
    }
    let preparer = Arc::new(Preparer::new(
        opts.paths.clone(),
        &dir,
        &opts.cdi_version,
        opts.device_info,
    )?);
    let first = State::of(inventory.borrow_and_update().clone(), None);
    let (state_tx, state_rx) = watch::channel(Arc::new(first));
    // Each new inventory becomes the state prepare and health serve from; derived in the
    // blocking pool (4,096 devices' pools are copied when they change).
    let follow = tokio::spawn(async move {
        while inventory.changed().await.is_ok() {
            let inv = inventory.borrow_and_update().clone();
            let prev = state_tx.borrow().clone();
            match tokio::task::spawn_blocking(move || State::of(inv, Some(&prev))).await {
                Ok(next) => {
                    state_tx.send_replace(Arc::new(next));
                }
                Err(e) => error!("deriving the driver's state: {e}"),
            }
        }
    });

    let dra = DraService {
        preparer,
        state: state_rx.clone(),
        source,
    };
    let health = HealthService {
        state: state_rx,
        node_name: opts.node_name.clone(),
    };
    let reg = RegistrationService {
        endpoint: dra_path.display().to_string(),
    };
    let dra_router = || {
        Server::builder()
            .max_concurrent_streams(MAX_STREAMS)
            .add_service(v1::dra_plugin_server::DraPluginServer::new(dra.clone()))
            .add_service(v1beta1::dra_plugin_server::DraPluginServer::new(
                dra.clone(),
            ))
            .add_service(DraResourceHealthServer::new(health.clone()))
            .add_service(HealthServerV1alpha1::new(health.clone()))
    };
    let reg_router = || {
        Server::builder()
            .max_concurrent_streams(MAX_STREAMS)
            .add_service(RegistrationServer::new(reg.clone()))
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DraError::Io { path, err: source }
    };
    let mut dra_sock = Served::start(&dra_path, dra_router()).map_err(io(&dra_path))?;
    let mut reg_sock = Served::start(&reg_path, reg_router()).map_err(io(&reg_path))?;
    info!(driver = %dra_path.display(), registration = %reg_path.display(), "serving kubelet");

    let mut check = tokio::time::interval(Duration::from_millis(500));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = check.tick() => {
                let mut renew_registration = reg_sock.gone();
                if dra_sock.gone() {
                    warn!(socket = %dra_path.display(), "driver socket vanished: serving it again");
                    let _ = ensure_dir(&dir, 0o700);
                    match Served::start(&dra_path, dra_router()) {
                        Ok(s) => std::mem::replace(&mut dra_sock, s).stop(false).await,
                        Err(e) => warn!("cannot serve {}: {e}", dra_path.display()),
                    }
                    // Kubelet's connection is to the old socket: register anew.
                    renew_registration = true;
                }
                if renew_registration {
                    warn!(socket = %reg_path.display(), "registration socket vanished: serving it again");
                    let _ = ensure_dir(&opts.registry_dir, 0o750);
                    match Served::start(&reg_path, reg_router()) {
                        Ok(s) => std::mem::replace(&mut reg_sock, s).stop(false).await,
                        Err(e) => warn!("cannot serve {}: {e}", reg_path.display()),
                    }
                }
            }
        }
    }
    follow.abort();
    // Registration first: kubelet stops using the driver before its socket goes.
    reg_sock.stop(true).await;
    dra_sock.stop(true).await;
    Ok(())
}
