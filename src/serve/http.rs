//! `serve --metrics-addr`: a small HTTP/1 server (hyper) answering `GET /metrics`. OpenMetrics
//! for clients that ask for it (Prometheus does), the classic text format otherwise. It also
//! answers `/healthz` (the daemon is alive) and `/readyz` (every pool registered with the
//! running kubelet), alone on `serve --health-addr`.

use super::holders::Holders;
use super::metrics::{self, Scrape};
use super::stats::Stats;
use crate::inventory::PoolView;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

/// Scrapes built at once; more wait (each reads a few files per allocated function).
const PARALLEL_SCRAPES: usize = 4;
/// Connections served at once; more are closed at accept. Far below the descriptor limit, so
/// a flood of idle clients never leaves the plugin sockets without descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers, and a connection this long in all
/// (keep-alive included): slow or idle clients give their slot back.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape reads, shared by every connection.
pub struct MetricsSource {
    pub views: watch::Receiver<BTreeMap<String, Arc<PoolView>>>,
    pub stats: Arc<Stats>,
    pub pod_resources_socket: PathBuf,
    pub sysfs_root: PathBuf,
    pub holders: Arc<Holders>,
    permits: Semaphore,
    /// `false`: health endpoints only.
    metrics: bool,
    /// Kubelet's pod resources API was found missing once already (said once, not per scrape).
    pod_resources_warned: AtomicBool,
}

impl MetricsSource {
    pub fn new(
        views: watch::Receiver<BTreeMap<String, Arc<PoolView>>>,
        stats: Arc<Stats>,
        pod_resources_socket: PathBuf,
        sysfs_root: PathBuf,
        holders: Arc<Holders>,
    ) -> Self {
        MetricsSource {
            views,
            stats,
            pod_resources_socket,
            sysfs_root,
            holders,
            permits: Semaphore::new(PARALLEL_SCRAPES),
            metrics: true,
            pod_resources_warned: AtomicBool::new(false),
        }
    }

    /// `/healthz` and `/readyz` only.
    pub fn health_only(
        views: watch::Receiver<BTreeMap<String, Arc<PoolView>>>,
        stats: Arc<Stats>,
        holders: Arc<Holders>,
    ) -> Self {
        MetricsSource {
            metrics: false,
            ..Self::new(views, stats, PathBuf::new(), PathBuf::new(), holders)
        }
    }

    /// One scrape as OpenMetrics text.
    pub async fn scrape(self: &Arc<Self>) -> String {
        let _permit = self.permits.acquire().await;
        let started = Instant::now();
        // Kubelet's answer also confirms or releases claims; when it does not answer, the
        // last known holders label the devices, marked stale.
        if let Err(e) = self.holders.ask(&self.pod_resources_socket).await {
            // Operators' DaemonSets do not mount the pod resources socket: say it once.
            if !self.pod_resources_warned.swap(true, Ordering::Relaxed) {
                warn!(socket = %self.pod_resources_socket.display(), "kubelet's pod resources API is unavailable; metrics keep the last known pod holders, marked stale (said once): {e}");
            } else {
                debug!(socket = %self.pod_resources_socket.display(), "pod resources unavailable: {e}");
            }
        }
        let labels = self.holders.labels();
        let views = self.views.borrow().clone();
        let me = self.clone();
        // File reads: off the runtime thread that serves kubelet.
        let text = tokio::task::spawn_blocking(move || {
            metrics::render(&Scrape {
                views: &views,
                stats: &me.stats,
                labels: &labels,
                sysfs_root: &me.sysfs_root,
            })
        })
        .await
        .unwrap_or_default();
        debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            bytes = text.len(),
            "scraped"
        );
        text
    }
}

/// Serve `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, source: Arc<MetricsSource>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Full: close at once (the client retries) rather than queue a descriptor per client.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused == 1 || refused.is_multiple_of(1000) {
                warn!(%peer, refused, "metrics endpoint: {MAX_CONNECTIONS} connections open; closing new ones");
            }
            drop(stream);
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, &source).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => debug!(%peer, "metrics connection ended: {e}"),
                Err(_) => debug!(%peer, "metrics connection closed after {CONNECTION_TIMEOUT:?}"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn answer(req: Request<Incoming>, source: &Arc<MetricsSource>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            format!("GET {path}\n"),
        );
    }
    match path {
        "/metrics" if source.metrics => {}
        "/healthz" => return reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            return match source.stats.readiness() {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                Err(problems) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    problems.iter().map(|p| format!("{p}\n")).collect(),
                ),
            };
        }
        _ => {
            let what = match source.metrics {
                true => "metrics are at /metrics, health at /healthz and /readyz",
                false => "health is at /healthz and /readyz",
            };
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("nicplug: {what}\n"),
            );
        }
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = source.scrape().await;
    match openmetrics {
        true => reply(StatusCode::OK, OPENMETRICS, text),
        false => reply(StatusCode::OK, CLASSIC, metrics::classic(&text)),
    }
}
