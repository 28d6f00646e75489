//! One pool's plugin endpoint: a gRPC server on its own Unix socket, and its registration with
//! kubelet (serve first, then register; retry registration with capped backoff, never give up).

use super::Served;
use super::holders::Holders;
use super::plugin::PluginService;
use super::stats::Stats;
use crate::api::RegisterRequest;
use crate::api::device_plugin_server::DevicePluginServer;
use crate::api::registration_client::RegistrationClient;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tracing::{error, info, warn};

pub const API_VERSION: &str = "v1beta1";
/// Streams (calls) at once on one connection to a plugin socket.
pub const MAX_STREAMS: u32 = 16;

/// A running endpoint. Dropping it does not stop it: call [`PoolEndpoint::stop`].
pub struct PoolEndpoint {
    pub socket: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    registrar: JoinHandle<()>,
    /// Wakes the registrar to register again (kubelet came back).
    pub reregister: Arc<Notify>,
}

/// Socket file name of a pool in `plugin_dir` (see [`crate::identity::socket_name`]).
pub fn socket_name(plugin_dir: &Path, resource: &str) -> std::io::Result<String> {
    crate::identity::socket_name(plugin_dir, resource).ok_or_else(|| {
        std::io::Error::other(format!(
            "{} is too long a path: no socket name fits the {}-byte limit of a socket path",
            plugin_dir.display(),
            crate::identity::SUN_PATH_MAX
        ))
    })
}

impl PoolEndpoint {
    /// Bind the pool's socket, serve it, and start registering with kubelet.
    pub fn start(
        plugin_dir: &Path,
        kubelet: Arc<Registration>,
        resource: &str,
        view: watch::Receiver<Arc<Served>>,
        device_info_dir: Option<PathBuf>,
        stats: Arc<Stats>,
        holders: Arc<Holders>,
    ) -> std::io::Result<Self> {
        let name = socket_name(plugin_dir, resource)?;
        let socket = plugin_dir.join(&name);
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Only kubelet (root) has business on this socket: create it 0600, then make sure. The
        // umask is process-wide: a file another thread creates meanwhile is only made stricter,
        // and the writers of files and directories others read (CDI specs, device-info) set
        // their mode anyway (`files::write_atomically`).
        let old_mask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = UnixListener::bind(&socket);
        rustix::process::umask(old_mask);
        let listener = bound?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;

        let service = PluginService {
            view,
            device_info_dir,
            stats: stats.clone(),
            holders,
        };
        let (tx, rx) = oneshot::channel();
        let resource_owned = resource.to_string();
        let server = tokio::spawn(async move {
            let result = Server::builder()
                // Kubelet keeps one connection with a ListAndWatch stream and a call or two
                // at a time: a client opening more is not kubelet.
                .max_concurrent_streams(MAX_STREAMS)
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                error!(resource = %resource_owned, "plugin server stopped: {e}");
            }
        });

        let reregister = Arc::new(Notify::new());
        let registrar = tokio::spawn(register_loop(
            kubelet,
            name,
            resource.to_string(),
            reregister.clone(),
            stats,
        ));
        Ok(PoolEndpoint {
            socket,
            shutdown: Some(tx),
            server,
            registrar,
            reregister,
        })
    }

    /// Stop serving and remove the socket. Open ListAndWatch streams end when the pool's view
    /// sender is dropped; the server is aborted if it lingers.
    pub async fn stop(mut self) {
        self.registrar.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_millis(200), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn socket_exists(&self) -> bool {
        self.socket.exists()
    }
}

use super::stats::{KubeletLife, kubelet_life};

/// Register now, and again each time `again` is notified, once per kubelet life: kubelet keeps
/// one stream per registration, and a stale duplicate ending would mark the pool unhealthy.
/// Failures are retried with capped backoff; a notification cuts the wait short.
async fn register_loop(
    kubelet: Arc<Registration>,
    endpoint: String,
    resource: String,
    again: Arc<Notify>,
    stats: Arc<Stats>,
) {
    let mut registered_with = None;
    loop {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            let life = kubelet_life(&kubelet.socket);
            if life.is_some() && life == registered_with {
                break;
            }
            match kubelet.register(&endpoint, &resource).await {
                Ok(()) => {
                    // Kubelet's socket may have appeared (restart) between the look and the
                    // connect: a life seen missing before and present after is the one we
                    // reached. A life that changed under us is unknown: register again when told.
                    let after = kubelet_life(&kubelet.socket);
                    registered_with = if life.is_none() || life == after {
                        after
                    } else {
                        None
                    };
                    stats.registered(&resource);
                    stats.registered_with(&resource, registered_with);
                    info!(%resource, %endpoint, elapsed_ms = started.elapsed().as_millis() as u64, "registered with kubelet");
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    // Kubelet being absent is normal (restarting, not yet up): say so, quietly.
                    if attempts == 1 || attempts.is_multiple_of(20) {
                        warn!(%resource, kubelet = %kubelet.socket.display(), attempts, "registration failed, retrying: {e}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(5)),
                        // Kubelet's socket just appeared: it may not accept for a moment yet,
                        // so start the backoff over rather than wait out a long delay.
                        _ = again.notified() => delay = Duration::from_millis(50),
                    }
                }
            }
        }
        again.notified().await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot connect: {}", chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error("kubelet refused: {0}")]
    Refused(#[from] tonic::Status),
    #[error("timed out")]
    Timeout,
}

/// Kubelet's registration service (`kubelet.sock`), reached through one connection shared by
/// the pools registering at the same moment and closed once none is. A tonic channel costs
/// ~40 KB (its HTTP/2 connection's buffers, its request queue): 32 pools registering at once,
/// each through its own, held 1.3 MB at start and after every kubelet restart (heaptrack).
pub struct Registration {
    pub socket: PathBuf,
    shared: std::sync::Mutex<Shared>,
    /// One connect at a time: the pools starting together wait for the first one's channel.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Shared {
    /// Registrations under way.
    users: usize,
    /// The channel and the kubelet life it was opened to.
    channel: Option<(Option<KubeletLife>, Channel)>,
}

/// A registration's use of the shared channel; the channel is closed when the last one ends,
/// and forgotten when one fails (the next registration connects anew).
struct Lease<'a> {
    owner: &'a Registration,
    channel: Channel,
    ok: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut shared = self.owner.lock();
        shared.users -= 1;
        if shared.users == 0 || !self.ok {
            shared.channel = None;
        }
    }
}

impl Registration {
    pub fn new(socket: PathBuf) -> Self {
        Registration {
            socket,
            shared: std::sync::Mutex::new(Shared::default()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The state is a counter and an optional channel, consistent at every step.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared channel, opened if there is none to the kubelet life there now.
    async fn lease(&self) -> Result<Lease<'_>, tonic::transport::Error> {
        let _one = self.connecting.lock().await;
        let life = kubelet_life(&self.socket);
        let reuse = |shared: &mut Shared| {
            let channel = match &shared.channel {
                Some((l, c)) if *l == life => c.clone(),
                _ => return None,
            };
            shared.users += 1;
            Some(channel)
        };
        let reused = reuse(&mut self.lock());
        let channel = match reused {
            Some(channel) => channel,
            None => {
                let channel = crate::uds::channel(&self.socket).await?;
                let mut shared = self.lock();
                shared.channel = Some((life, channel.clone()));
                shared.users += 1;
                channel
            }
        };
        Ok(Lease {
            owner: self,
            channel,
            ok: false,
        })
    }

    async fn register(&self, endpoint: &str, resource: &str) -> Result<(), RegisterError> {
        let call = async {
            let mut lease = self.lease().await?;
            RegistrationClient::new(lease.channel.clone())
                .register(RegisterRequest {
                    version: API_VERSION.into(),
                    endpoint: endpoint.into(),
                    resource_name: resource.into(),
                    options: Some(crate::api::DevicePluginOptions {
                        pre_start_required: false,
                        get_preferred_allocation_available: true,
                    }),
                })
                .await?;
            lease.ok = true;
            Ok(())
        };
        // A call cut short by the timeout drops its lease as failed.
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .map_err(|_| RegisterError::Timeout)?
    }
}

/// An error with its sources, `a: b: c` (tonic's transport error alone says only "transport error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Wrappers often repeat their source's message; say it once.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
