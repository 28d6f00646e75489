//! `nicplug demo`: the whole path on the bundled sample node, no NIC and no kubelet needed.
//!
//! A real `nicplug serve` (this binary, as a child process) registers with a small kubelet
//! stand-in served here; the stand-in then does what kubelet does for one DPDK pod:
//! ListAndWatch, GetPreferredAllocation, Allocate. `nicplug doctor`'s checks then run on a
//! simulated view of that pod (what the container would see of `/sys`, `/dev` and `/proc`),
//! and once more without its uverbs node. Finally a PF loses its carrier and the update kubelet
//! receives is shown: exactly that PF's VFs turn Unhealthy (a VF's own link being down, as
//! every free VF's is on a real node, never does).

use crate::api::device_plugin_client::DevicePluginClient;
use crate::api::registration_server::{Registration, RegistrationServer};
use crate::api::{self, Empty, RegisterRequest};
use crate::{fixture, report};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("preparing the sample node: {0}")]
    Fixture(#[from] fixture::FixtureError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC call failed: {0}")]
    Call(#[from] Status),
    #[error("{0}")]
    Stuck(String),
    #[error(transparent)]
    Discover(#[from] crate::host::DiscoverError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Kubelet's side of registration: record each request.
struct StandIn(mpsc::Sender<RegisterRequest>);

#[tonic::async_trait]
impl Registration for StandIn {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.0.send(request.into_inner()).await;
        Ok(Response::new(Empty {}))
    }
}

/// Text styles, only when writing to a terminal.
struct Style {
    on: bool,
}

impl Style {
    fn head(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn dim(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// The daemon child; SIGTERM on drop, so no run of the demo leaves one behind.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.0.wait();
    }
}

pub async fn run(exe: &Path, color: bool) -> Result<String, DemoError> {
    let st = Style { on: color };
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let paths = fixture::materialize(&fixture::sample_node(), root)?;
    let config = root.join("config.json");
    std::fs::write(&config, fixture::sample_config())?;
    let plugin_dir = root.join("kubelet/device-plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    let mut out = String::new();

    let host = crate::host::discover(&paths)?;
    let cfg = crate::config::parse_config_file(&config)?;
    let pools = crate::pools::build(&host, &cfg, "intel.com");
    let _ = writeln!(
        out,
        "{}\n{}\n",
        st.head("1. A simulated node: the bundled sample (nicplug discover)"),
        st.dim(&format!("   files in {}", root.display()))
    );
    for line in report::discover_table(&host, &pools).lines() {
        let _ = writeln!(out, "   {line}");
    }

    // Kubelet stand-in first, so the daemon registers at once.
    let (reg_tx, mut reg_rx) = mpsc::channel(16);
    let listener = UnixListener::bind(plugin_dir.join("kubelet.sock"))?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(StandIn(reg_tx)))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    let started = Instant::now();
    let _daemon = Daemon(
        Command::new(exe)
            .arg("--host-root")
            .arg(root)
            .arg("--config")
            .arg(&config)
            .args(["--log", "error", "serve", "--rescan-interval", "1"])
            .arg("--kubelet-dir")
            .arg(root.join("kubelet"))
            .arg("--device-info-dir")
            .arg(root.join("devinfo"))
            .stdin(Stdio::null())
            .spawn()?,
    );

    let mut registered = Vec::new();
    while registered.len() < cfg.resources.len() {
        let req = tokio::time::timeout(Duration::from_secs(10), reg_rx.recv())
            .await
            .map_err(|_| DemoError::Stuck("the daemon did not register within 10 s".into()))?
            .ok_or_else(|| DemoError::Stuck("kubelet stand-in stopped".into()))?;
        registered.push((req, started.elapsed()));
    }
    registered.sort_by(|a, b| a.0.resource_name.cmp(&b.0.resource_name));
    let _ = writeln!(
        out,
        "\n{}\n",
        st.head("2. nicplug serve registered one device plugin per pool with the kubelet stand-in")
    );
    let mut streams = Vec::new();
    for (req, at) in &registered {
        let mut client =
            DevicePluginClient::new(crate::uds::channel(&plugin_dir.join(&req.endpoint)).await?);
        let mut stream = client.list_and_watch(Empty {}).await?.into_inner();
        let first = stream.message().await?.unwrap_or_default();
        let healthy = first
            .devices
            .iter()
            .filter(|d| d.health == "Healthy")
            .count();
        let _ = writeln!(
            out,
            "   {:<24} {:>2} devices, {:>2} healthy   {}",
            req.resource_name,
            first.devices.len(),
            healthy,
            st.dim(&format!(
                "registered after {} ms on {}",
                at.as_millis(),
                req.endpoint
            ))
        );
        streams.push((req.resource_name.clone(), client, stream, first));
    }

    let Some((resource, client, stream, first)) =
        streams.iter_mut().find(|(r, ..)| r.ends_with("/cx6dx_vf"))
    else {
        return Err(DemoError::Stuck(
            "the sample config has no cx6dx_vf pool".into(),
        ));
    };
    let healthy: Vec<String> = first
        .devices
        .iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id.clone())
        .collect();
    let preferred = client
        .get_preferred_allocation(api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: healthy.clone(),
                must_include_device_i_ds: vec![],
                allocation_size: 1,
            }],
        })
        .await?
        .into_inner();
    let id = preferred
        .container_responses
        .first()
        .and_then(|r| r.device_i_ds.first())
        .cloned()
        .ok_or_else(|| DemoError::Stuck("no preferred device".into()))?;
    let response = client
        .allocate(api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest {
                devices_ids: vec![id.clone()],
            }],
        })
        .await?
        .into_inner();
    let car = response
        .container_responses
        .into_iter()
        .next()
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n{}\n",
        st.head(&format!(
            "3. A DPDK pod asks for 1 x {resource}: GetPreferredAllocation picks {id}; Allocate gives the container"
        ))
    );
    write_response(&mut out, &st, &car, &host, &id);
    write_verdict(&mut out, &st, root, &car, &host, &id)?;

    // The PF of the allocated VF loses its carrier: its netdev and RDMA port, as the kernel
    // shows them. `carrier` first: it alone decides, so a rescan between the writes sees the
    // whole change or none of it.
    let Some(pf) = host
        .function(&id)
        .and_then(|f| f.physfn.as_ref())
        .and_then(|p| host.function(&p.address))
    else {
        return Ok(out);
    };
    let pf_netdev = pf.netdevs.first().map_or("-", |n| n.name.as_str());
    if let Some(n) = pf.netdevs.first() {
        let dir = paths
            .sysfs_root
            .join(&pf.sysfs_dir)
            .join("net")
            .join(&n.name);
        std::fs::write(dir.join("carrier"), "0\n")?;
        std::fs::write(dir.join("operstate"), "down\n")?;
    }
    for p in pf.rdma.iter().flat_map(|r| &r.ports) {
        let dir = paths.sysfs_root.join(&p.sysfs_dir);
        std::fs::write(dir.join("state"), "1: DOWN\n")?;
        std::fs::write(dir.join("phys_state"), "3: Disabled\n")?;
    }
    let t = Instant::now();
    let update = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .map_err(|_| DemoError::Stuck("no ListAndWatch update within 5 s".into()))??
        .unwrap_or_default();
    let unhealthy: Vec<&str> = update
        .devices
        .iter()
        .filter(|d| d.health != "Healthy")
        .map(|d| d.id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "\n{}\n   ListAndWatch after {} ms: {} devices; unhealthy: {}\n   {}\n   {}",
        st.head(&format!(
            "5. PF {} ({pf_netdev}) loses its carrier; kubelet receives",
            pf.address
        )),
        t.elapsed().as_millis(),
        update.devices.len(),
        unhealthy.join(", "),
        st.dim("exactly that PF's VFs; a VF's own link being down (every free VF's is) never counts"),
        st.dim("(here sysfs files changed, seen by the 1 s safety-net rescan; on a node, rtnetlink reports carrier changes at once)")
    );
    let _ = writeln!(
        out,
        "\n{}",
        st.dim("Next: `nicplug sample write DIR`, then `nicplug --host-root DIR --config DIR/config.json discover`; README for serve on a real node.")
    );
    Ok(out)
}

fn write_response(
    out: &mut String,
    st: &Style,
    car: &api::ContainerAllocateResponse,
    host: &crate::host::Host,
    id: &str,
) {
    let numbers = |path: &str| -> String {
        host.device(id)
            .and_then(|d| d.rdma())
            .and_then(|r| {
                [r.uverbs.as_ref()]
                    .into_iter()
                    .flatten()
                    .chain(r.umad.iter())
                    .chain(r.issm.iter())
                    .chain(host.rdma_cm.as_ref())
                    .find(|c| c.path == path)
                    .map(|c| format!("{}:{}", c.major, c.minor))
            })
            .unwrap_or_default()
    };
    for d in &car.devices {
        let _ = writeln!(
            out,
            "   device  {:<32} {:<8} {}",
            d.container_path,
            numbers(&d.container_path),
            d.permissions
        );
    }
    for m in &car.mounts {
        let _ = writeln!(
            out,
            "   mount   {} {}\n           {}",
            m.container_path,
            if m.read_only {
                "(read-only)"
            } else {
                "(read-write)"
            },
            st.dim("the port's hw_counters, for rte_eth_xstats_get; never /sys itself")
        );
    }
    for (k, v) in &car.envs {
        let v = if v.len() > 90 {
            format!("{}...", &v[..87])
        } else {
            v.clone()
        };
        let _ = writeln!(out, "   env     {k}={v}");
    }
    if let Some(k) = car.envs.keys().find(|k| k.starts_with("NICPLUG_EAL_ARGS_")) {
        let _ = writeln!(
            out,
            "   run     dpdk-testpmd ${k} -l 2-3 -- -i   {}",
            st.dim("(unprivileged: NET_RAW + IPC_LOCK)")
        );
    }
}

/// Section 4: `doctor::run` on a simulated pod that got exactly `car` for `id` (see
/// [`crate::doctor::pod_view`]), then the same pod without its uverbs node.
fn write_verdict(
    out: &mut String,
    st: &Style,
    root: &Path,
    car: &api::ContainerAllocateResponse,
    host: &crate::host::Host,
    id: &str,
) -> Result<(), DemoError> {
    use crate::doctor::{self, CheckId, Status, pod_view};
    // deploy/dpdk-pod.yaml asks for hugepages-1Gi: 2Gi.
    let hugepages = pod_view::Hugepages {
        size_kb: 1 << 20,
        free: 2,
    };
    let pod = root.join("pod");
    let paths = fixture::materialize(&fixture::sample_node(), &pod)?;
    // The pod's /dev holds the response's nodes only; its /proc is written below.
    std::fs::remove_dir_all(&paths.dev_root)?;
    std::fs::remove_dir_all(&paths.proc_root)?;
    let nodes: Vec<_> = car
        .devices
        .iter()
        .map(|d| (d.host_path.clone().into(), d.container_path.clone()))
        .collect();
    let kind = pod_view::device_nodes(&paths.dev_root, &nodes)?;
    // sriov-cni moved the VF's netdev into the pod's netns as net1; the runtime gave lo, eth0.
    let mut netns = vec!["lo", "eth0"];
    if let Some(n) = host.function(id).and_then(|f| f.netdevs.first()) {
        pod_view::prune_netdevs(&paths.sysfs_root, &[&n.name])?;
        pod_view::rename_netdev(&paths.sysfs_root, &n.name, "net1")?;
        netns.push("net1");
    } else {
        pod_view::prune_netdevs(&paths.sysfs_root, &[])?;
    }
    pod_view::add_pod_entries(&paths.sysfs_root, &["lo", "eth0"], hugepages)?;
    let counters: Vec<&str> = car
        .mounts
        .iter()
        .filter(|m| m.read_only && m.container_path.starts_with("/sys/"))
        .map(|m| m.container_path.as_str())
        .collect();
    pod_view::PodProc::healthy(&netns, &counters, hugepages).write(&paths.proc_root)?;
    let input = doctor::Input {
        paths: paths.clone(),
        env: car.envs.clone().into_iter().collect(),
        devices: Vec::new(),
        pagemap_addr: Some(0),
    };
    let report = doctor::run(&input);

    // Paths as the pod sees them: /sys, /dev, /proc.
    let prefix = pod.display().to_string();
    let _ = writeln!(
        out,
        "\n{}\n   {}\n",
        st.head("4. nicplug doctor's verdict for that pod's view"),
        st.dim(
            "(a simulated pod's view of the sample node; `nicplug doctor` inside a real pod reads the real /sys, /dev and /proc)"
        )
    );
    if kind == pod_view::NodeKind::Placeholders {
        let _ = writeln!(
            out,
            "   {}",
            st.dim("mknod is not permitted here: the sample node's device nodes are empty files, so uverbs fails below (as root it passes)")
        );
    }
    for line in doctor::render::table(&report, st.on).lines() {
        let _ = writeln!(out, "   {}", line.replace(&prefix, ""));
    }

    // What doctor is for: the same pod without the allocation's uverbs node.
    let uverbs = car
        .devices
        .iter()
        .find(|d| d.container_path.starts_with("/dev/infiniband/uverbs"));
    if let Some(u) = uverbs {
        std::fs::remove_file(paths.dev_host_path(&u.container_path))?;
        let without = doctor::run(&input);
        if let Some(c) = without
            .find(CheckId::Uverbs, Some(id))
            .filter(|c| c.status == Status::Fail)
        {
            let one = doctor::Report {
                ok: false,
                functions: without.functions.clone(),
                checks: vec![c.clone()],
                counts: doctor::Counts {
                    fail: 1,
                    ..Default::default()
                },
            };
            let _ = writeln!(
                out,
                "\n   {}",
                st.dim(&format!(
                    "the same pod without {} (field report failure 2):",
                    u.container_path
                ))
            );
            if let Some(line) = doctor::render::table(&one, st.on).lines().next() {
                let _ = writeln!(out, "   {}", line.replace(&prefix, ""));
            }
        }
    }
    Ok(())
}
