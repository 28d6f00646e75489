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
use tonic::transport::Server;
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
            plugin_dir.join("kubelet.sock"),
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

use super::stats::kubelet_life;

/// Register now, and again each time `again` is notified, once per kubelet life: kubelet keeps
/// one stream per registration, and a stale duplicate ending would mark the pool unhealthy.
/// Failures are retried with capped backoff; a notification cuts the wait short.
async fn register_loop(
    kubelet_sock: PathBuf,
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
            let life = kubelet_life(&kubelet_sock);
            if life.is_some() && life == registered_with {
                break;
            }
            match register(&kubelet_sock, &endpoint, &resource).await {
                Ok(()) => {
                    // Kubelet's socket may have appeared (restart) between the look and the
                    // connect: a life seen missing before and present after is the one we
                    // reached. A life that changed under us is unknown: register again when told.
                    let after = kubelet_life(&kubelet_sock);
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
                        warn!(%resource, kubelet = %kubelet_sock.display(), attempts, "registration failed, retrying: {e}");
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

async fn register(
    kubelet_sock: &Path,
    endpoint: &str,
    resource: &str,
) -> Result<(), RegisterError> {
    let call = async {
        let channel = crate::uds::channel(kubelet_sock).await?;
        RegistrationClient::new(channel)
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
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| RegisterError::Timeout)?
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
