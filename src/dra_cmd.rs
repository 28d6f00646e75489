//! `nicplug dra ...`: the API-server side of the DRA driver (classes, slices).

use anyhow::Result;
use nicplug::HostPaths;
use nicplug::config::Config;
use nicplug::dra::{classes, inventory, publish, slices};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum DraCommand {
    /// Run the kubelet plugin: registers through kubelet's plugins_registry as `nicplug.io`,
    /// prepares claims (read from the API server) into per-claim CDI specs with exactly the
    /// device plugin's edits, streams device health (alpha in kubelet)
    Kubelet(Box<super::DraArgs>),
    /// Print one DeviceClass per exclusive pool of the config (YAML, `---` separated, ready for
    /// `kubectl apply -f -`): selector on the device's nicplug.io/resourceName, the pool's
    /// name as extendedResourceName, the pool's nicplug options as DpdkConfig
    Classes {
        /// Prefix of resource names without their own resourcePrefix [default: --resource-prefix]
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Also print a ResourceClaimTemplate for one device of the first class and a DPDK pod
        /// using it
        #[arg(long)]
        examples: bool,
    },
    /// Publish this node's ResourceSlices (API server from $KUBECONFIG or the pod's service
    /// account) and keep them in step with the host: every sysfs, uevent or config change
    /// republishes at once
    Publish {
        /// The node's name (the pool and spec.nodeName of the slices)
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Publish once and exit
        #[arg(long)]
        once: bool,
        /// Delete the node's slices on SIGTERM/SIGINT (off by default: a restart or upgrade
        /// of the DaemonSet must not make the devices vanish from the scheduler)
        #[arg(long)]
        delete_on_exit: bool,
        /// Seconds between safety-net rescans
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        rescan_interval: u64,
        /// Seconds after which an unchanged inventory is checked against the API server again
        /// (at the next rescan), repairing slices someone else changed or deleted
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
        resync_interval: u64,
        /// Kubelet's device-plugins directory: devices a nicplug device plugin on this node
        /// holds (its nicplug-holders.json) are left out of the slices until released
        #[arg(
            long,
            default_value = "/var/lib/kubelet/device-plugins",
            env = "NICPLUG_DEVICE_PLUGINS_DIR"
        )]
        device_plugins_dir: PathBuf,
    },
    /// Print, as JSON, what claim NAMESPACE/NAME (with UID) allocates to nicplug.io on this
    /// node: the devices and the opaque configs, as the kubelet side prepares them
    Claim {
        namespace: String,
        name: String,
        uid: String,
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
    },
    /// Delete this node's ResourceSlices of driver nicplug.io (before removing the DaemonSet)
    Uninstall {
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
    },
}

pub struct Ctx {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub paths: HostPaths,
    pub resource_prefix: String,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

pub(crate) async fn client() -> Result<kube::Client> {
    // kube's error already says its causes in its message; as a chain they would repeat.
    kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to the API server (KUBECONFIG or the in-cluster service account): {e}"
        )
    })
}

pub fn run(cmd: DraCommand, ctx: Ctx) -> Result<()> {
    match cmd {
        // main runs the kubelet plugin itself (it needs the host arguments).
        DraCommand::Kubelet(_) => anyhow::bail!("dra kubelet: run through main"),
        DraCommand::Classes { prefix, examples } => {
            let prefix = prefix.unwrap_or(ctx.resource_prefix);
            let config = ctx.config;
            let list = classes::classes(&config, &prefix)?;
            let mut docs = Vec::new();
            for c in &list {
                docs.push(serde_saphyr::to_string(c)?);
            }
            if examples && let (Some(class), Some(r)) = (list.first(), config.resources.first()) {
                let name = class.metadata.name.as_deref().unwrap_or_default();
                for e in classes::examples(name, r.prefix(&prefix), &r.resource_name) {
                    docs.push(serde_saphyr::to_string(&e)?);
                }
            }
            print!("{}", docs.join("---\n"));
        }
        DraCommand::Publish {
            node_name,
            once,
            delete_on_exit,
            rescan_interval,
            resync_interval,
            device_plugins_dir,
        } => {
            let src = inventory::Source {
                paths: ctx.paths,
                config: required_config(ctx.config_path)?,
                default_prefix: ctx.resource_prefix,
                rescan: Duration::from_secs(rescan_interval),
                device_plugin_record: Some(
                    device_plugins_dir.join(nicplug::inventory::claims::STATE_FILE),
                ),
            };
            runtime()?.block_on(async move {
                let client = client().await?;
                let mut publisher = publish::Publisher::new(client.clone(), &node_name)
                    .resync_after(Duration::from_secs(resync_interval));
                if once {
                    let inv = tokio::task::spawn_blocking(move || inventory::read(&src)).await??;
                    let held = inventory::held(&inv);
                    let mut devices = slices::devices(&inv.host, inventory::exclusive(&inv));
                    devices.retain(|p| !held.contains(&p.id.kubelet()));
                    publisher.publish(&devices).await?;
                    println!("{} devices published for node {node_name}", devices.len());
                    return Ok(());
                }
                let (inventory, rx) = inventory::start(&src).await?;
                let task = tokio::spawn(publisher.run(rx));
                shutdown().await;
                task.abort();
                inventory.stop();
                if delete_on_exit {
                    let mut p = publish::Publisher::new(client, &node_name);
                    let n = p.delete_all().await?;
                    tracing::info!("{n} ResourceSlices deleted on exit");
                }
                anyhow::Ok(())
            })?;
        }
        DraCommand::Claim {
            namespace,
            name,
            uid,
            node_name,
        } => {
            let claim = nicplug::dra::model::ClaimRef {
                namespace,
                name,
                uid,
            };
            let alloc = runtime()?.block_on(async {
                let c = client().await?;
                anyhow::Ok(nicplug::dra::claims::get(&c, &claim, &node_name).await?)
            })?;
            println!("{}", serde_json::to_string_pretty(&alloc)?);
        }
        DraCommand::Uninstall { node_name } => {
            runtime()?.block_on(async move {
                let mut p = publish::Publisher::new(client().await?, &node_name);
                let n = p.delete_all().await?;
                println!("{n} ResourceSlices of node {node_name} deleted");
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}

/// The DRA driver's devices are the functions the config's pools select: without a config
/// it would publish nothing, which is never what was meant.
pub(crate) fn required_config(path: Option<PathBuf>) -> Result<PathBuf> {
    path.ok_or_else(|| {
        anyhow::anyhow!(
            "no config: give --config FILE (or /etc/pcidp/config.json); its pools select the functions \
             that become DRA devices, as they do for the device plugin"
        )
    })
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
