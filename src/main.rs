//! The `nicplug` command line: thin edges over the library.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nicplug::config::{self, Config};
use nicplug::host::{self, Host};
use nicplug::pools::{self, Pools};
use nicplug::{HostPaths, fixture, render, report, serve};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod dra_cmd;

/// Where the SR-IOV network device plugin reads its config; operators mount the ConfigMap there.
const DEFAULT_CONFIG: &str = "/etc/pcidp/config.json";

#[derive(Parser)]
#[command(
    name = "nicplug",
    version,
    about = "Kubernetes device plugin that hands ConnectX (mlx5) NICs to unprivileged DPDK pods",
    long_about = "Kubernetes device plugin that hands ConnectX (mlx5) NICs to unprivileged DPDK pods.\n\n\
        nicplug discovers PCI network functions from sysfs, groups them into resource pools with \
        the SR-IOV network device plugin's config.json, and gives each container exactly the RDMA \
        device nodes, a read-only hw_counters mount and the DPDK environment it needs: never /sys, \
        never privileged.\n\nTry it without a NIC: `nicplug demo`.\n\n\
        Without a subcommand nicplug runs the daemon (`serve`) and also accepts the SR-IOV network \
        device plugin's command line unchanged (`--config-file`, `--resource-prefix`, `--use-cdi`, \
        `--log-level`, `--log-dir` and the glog flags `-v`, `-logtostderr`, ...): see the \
        README's compatibility section."
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct HostArgs {
    /// sysfs root to discover functions from
    #[arg(
        long,
        global = true,
        default_value = "/sys",
        env = "NICPLUG_SYSFS_ROOT"
    )]
    sysfs_root: PathBuf,
    /// Root of the host's device nodes (host paths of the nodes handed out)
    #[arg(long, global = true, default_value = "/dev", env = "NICPLUG_DEV_ROOT")]
    dev_root: PathBuf,
    /// procfs root, for the IPv4 routing table
    #[arg(
        long,
        global = true,
        default_value = "/proc",
        env = "NICPLUG_PROC_ROOT"
    )]
    proc_root: PathBuf,
    /// A simulated host: sets the sysfs, dev and proc roots to DIR/sys, DIR/dev and DIR/proc
    /// (see `nicplug sample write`)
    #[arg(long, global = true, value_name = "DIR", conflicts_with_all = ["sysfs_root", "dev_root", "proc_root"])]
    host_root: Option<PathBuf>,
    /// Resource config: the SR-IOV network device plugin's config.json (`resourceList`), the
    /// RDMA shared device plugin's (`configList`), or one file with both (JSON, or YAML by
    /// extension .yaml/.yml; a file without extension, like an operator's per-node ConfigMap
    /// key, is read as JSON when it starts with `{`, as YAML otherwise)
    #[arg(
        long,
        global = true,
        visible_alias = "config-file",
        env = "NICPLUG_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Prefix of resource names without their own resourcePrefix (the SR-IOV plugin's default)
    #[arg(
        long,
        global = true,
        default_value = "intel.com",
        env = "NICPLUG_RESOURCE_PREFIX",
        value_parser = resource_prefix
    )]
    resource_prefix: String,
    /// Log filter: a level (`off`, `error`, `warn`, `info`, `debug`, `trace`) and/or
    /// `target=level` directives, comma-separated, e.g. `warn,nicplug=debug` [default: warn;
    /// with the SR-IOV plugin's flags, from its `-v`/`--log-level`]
    #[arg(long, global = true, env = "NICPLUG_LOG", value_parser = log_filter)]
    log: Option<String>,
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "NICPLUG_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List every network function on the node: model, driver, PF/VF, netdev, RDMA device,
    /// uverbs node, NUMA node, link state and the pool it lands in (or why none)
    Discover {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Validate resource configs
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print, as JSON, the exact ContainerAllocateResponse the daemon returns for these device
    /// IDs: an operator's preview of what a pod gets. Like the daemon, refuses (exit 2) IDs
    /// that are not in the pool or not healthy (health as read from sysfs now)
    Allocate {
        /// Resource name, with or without prefix (`nvidia.com/cx6dx_vf` or `cx6dx_vf`)
        #[arg(long)]
        resource: String,
        /// Device IDs (PCI addresses) as kubelet would request them
        #[arg(required = true)]
        ids: Vec<String>,
        /// Answer as `serve --cdi` does: `cdi_devices` and envs, no devices or mounts
        #[arg(long, visible_alias = "use-cdi")]
        cdi: bool,
        #[arg(long, default_value = nicplug::cdi::DEFAULT_VERSION, value_parser = cdi_version, requires = "cdi", help = CDI_VERSION_HELP)]
        cdi_version: String,
    },
    /// Run the kubelet device plugin daemon: one plugin per pool, registered with kubelet,
    /// kept in step with the host (uevents, link state, config changes, kubelet restarts)
    Serve {
        /// Kubelet's state directory; plugin sockets go in its device-plugins/
        #[arg(long, default_value = "/var/lib/kubelet", env = "NICPLUG_KUBELET_DIR")]
        kubelet_dir: PathBuf,
        /// Where to write CNI device-info files
        #[arg(
            long,
            default_value = "/var/run/k8s.cni.cncf.io/devinfo/dp",
            env = "NICPLUG_DEVICE_INFO_DIR"
        )]
        device_info_dir: PathBuf,
        /// Write no CNI device-info files
        #[arg(long)]
        no_device_info: bool,
        /// Seconds between safety-net rescans (changes are picked up from events at once)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        rescan_interval: u64,
        #[command(flatten)]
        cdi: CdiArgs,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9440); off by default
        #[arg(long, value_name = "ADDR", env = "NICPLUG_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Kubelet's pod resources socket, asked at each scrape which pod holds which device
        /// [default: <kubelet-dir>/pod-resources/kubelet.sock]
        #[arg(long, value_name = "PATH", env = "NICPLUG_POD_RESOURCES_SOCKET")]
        pod_resources_socket: Option<PathBuf>,
        /// Serve http://ADDR/healthz (the daemon answers) and /readyz (every pool registered
        /// with the running kubelet) without metrics; the metrics address serves both too
        #[arg(long, value_name = "ADDR", env = "NICPLUG_HEALTH_ADDR")]
        health_addr: Option<std::net::SocketAddr>,
    },
    /// Write CDI specs for every pool of the node (one file per resource, kind
    /// `<prefix>/<name>`, one device per function named by its ID), or print them as a JSON
    /// array: `podman run --device nvidia.com/cx6dx_vf=0000:3b:00.2`
    Cdi {
        /// Write `nicplug-<prefix>_<name>.json` files into DIR (atomically) instead of printing
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        #[arg(long, default_value = nicplug::cdi::DEFAULT_VERSION, value_parser = cdi_version, help = CDI_VERSION_HELP)]
        cdi_version: String,
    },
    /// Run inside a pod: check that DPDK can use the allocated ConnectX functions (host /sys,
    /// netdev namespace, uverbs nodes, IOVA, counters, hugepages, capabilities), one line per
    /// check with its fix; exit 0 when no check fails, 1 otherwise
    Doctor {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Check this function (PCI address or mlx5_core.sf.N) instead of those the PCIDEVICE_*
        /// variables list; repeatable
        #[arg(long = "device", value_name = "ID")]
        devices: Vec<String>,
        /// Only print the DPDK EAL arguments for the allocated functions
        /// (`dpdk-testpmd $(nicplug doctor --eal-args) -- ...`)
        #[arg(long)]
        eal_args: bool,
    },
    /// Readiness check of a running `serve` (for a DaemonSet probe): there is a nicplug plugin
    /// socket, each answers GetDevicePluginOptions within 2 s, and the daemon says every pool
    /// is registered with the running kubelet; exit 0 if so, 1 otherwise
    Probe {
        /// Kubelet's state directory, as given to `serve`
        #[arg(long, default_value = "/var/lib/kubelet", env = "NICPLUG_KUBELET_DIR")]
        kubelet_dir: PathBuf,
        /// Liveness only: the sockets answer (registration is not checked, so a kubelet that
        /// is restarting or refusing does not get the daemon restarted)
        #[arg(long)]
        liveness: bool,
    },
    /// Show nicplug on the bundled sample node (no NIC, no root needed): discovery, the real
    /// daemon with a built-in kubelet stand-in, what a DPDK pod gets for one VF, the doctor's
    /// verdict and a VF going down
    Demo,
    /// The bundled sample node
    #[command(subcommand)]
    Sample(SampleCommand),
    /// Dynamic Resource Allocation (resource.k8s.io/v1): DeviceClasses, ResourceSlices
    #[command(subcommand)]
    Dra(dra_cmd::DraCommand),
}

#[derive(clap::Args)]
pub(crate) struct DraArgs {
    /// Kubelet's plugin registration directory
    #[arg(
        long,
        default_value = "/var/lib/kubelet/plugins_registry",
        env = "NICPLUG_PLUGINS_REGISTRY"
    )]
    plugins_registry: PathBuf,
    /// Kubelet's plugin directory; the driver's socket and checkpoint go in its nicplug.io/
    #[arg(
        long,
        default_value = "/var/lib/kubelet/plugins",
        env = "NICPLUG_PLUGINS_DIR"
    )]
    plugins_dir: PathBuf,
    /// Where claim CDI specs are written (nicplug.io-claim_<uid>.json)
    #[arg(long, default_value = "/var/run/cdi", env = "NICPLUG_CDI_DIR")]
    cdi_dir: PathBuf,
    #[arg(long, default_value = nicplug::cdi::DEFAULT_VERSION, value_parser = cdi_version, help = CDI_VERSION_HELP)]
    cdi_version: String,
    /// Where to write CNI device-info files
    #[arg(
        long,
        default_value = "/var/run/k8s.cni.cncf.io/devinfo/dp",
        env = "NICPLUG_DEVICE_INFO_DIR"
    )]
    device_info_dir: PathBuf,
    /// Write no CNI device-info files
    #[arg(long)]
    no_device_info: bool,
    /// This node's name: the ResourceSlice pool the devices are published in
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Seconds between safety-net rescans of the node (sysfs, uevent, config and link events
    /// do the real work, as in `serve`)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    rescan_interval: u64,
    /// Also publish this node's ResourceSlices (API server from $KUBECONFIG or the pod's
    /// service account), from the same inventory the kubelet side serves: one process, one
    /// view of the node (what the DaemonSet runs; `dra publish` alone does only this part)
    #[arg(long)]
    publish_slices: bool,
    /// Kubelet's device-plugins directory, where a nicplug device plugin on this node keeps
    /// its record of allocations (nicplug-holders.json): devices in it are Unhealthy here,
    /// refused to claims and left out of the slices
    #[arg(
        long,
        default_value = "/var/lib/kubelet/device-plugins",
        env = "NICPLUG_DEVICE_PLUGINS_DIR"
    )]
    device_plugins_dir: PathBuf,
    /// Read claims' allocations from DIR/<claim uid>.json instead of the API server (testing
    /// without a cluster)
    #[arg(long, value_name = "DIR", env = "NICPLUG_CLAIMS_FROM_DIR")]
    claims_from_dir: Option<PathBuf>,
}

const CDI_VERSION_HELP: &str = "cdiVersion of the specs (0.5.0 or later). Podman 4.3 (Debian 12) \
    accepts 0.5.0 and silently ignores 0.6.0 specs; containerd 1.7 reads both";

/// CDI mode of `serve`.
#[derive(clap::Args)]
#[command(next_help_heading = "CDI (Container Device Interface)")]
struct CdiArgs {
    /// Write a CDI spec per resource into --cdi-dir (kept in step with the pool, removed on
    /// exit) and answer Allocate with `cdi_devices` and the same envs, without devices/mounts
    #[arg(long, visible_alias = "use-cdi", env = "NICPLUG_CDI")]
    cdi: bool,
    /// Where CDI spec files go (the runtime's dynamic spec directory)
    #[arg(
        long,
        default_value = "/var/run/cdi",
        env = "NICPLUG_CDI_DIR",
        requires = "cdi"
    )]
    cdi_dir: PathBuf,
    #[arg(long, default_value = nicplug::cdi::DEFAULT_VERSION, value_parser = cdi_version, requires = "cdi", help = CDI_VERSION_HELP)]
    cdi_version: String,
}

fn cdi_version(s: &str) -> Result<String, String> {
    nicplug::cdi::check_version(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exit 0 with a one-line summary per pool, or exit 2 with every problem found, including
    /// resources whose sockets, CDI specs, variables or device-info files would clash (socket
    /// paths measured against /var/lib/kubelet/device-plugins) and names kubelet would refuse
    Check {
        /// The config file (as for --config) [default: --config/--config-file, or
        /// /etc/pcidp/config.json]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SampleCommand {
    /// Write the sample node (sys/, dev/, proc/ and config.json) into DIR; then use
    /// `--host-root DIR --config DIR/config.json`
    Write {
        dir: PathBuf,
        /// Write this host description (YAML, format of fixtures/sample-node.yaml) instead
        #[arg(long, conflicts_with = "generated")]
        spec: Option<PathBuf>,
        /// Write a synthetic host of PFS x VFS ConnectX-6 Dx functions instead, e.g. `8x127`
        #[arg(long, value_name = "PFSxVFS", value_parser = parse_generated)]
        generated: Option<(u32, u32)>,
        /// Replace DIR's sys/, dev/, proc/ and config.json if they exist (nothing else in DIR
        /// is touched)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Whether this binary runs `nicplug dra` itself. The DRA driver lives in `nicplug-dra`
/// (`src/bin/nicplug-dra.rs`, this same file), and `nicplug dra ...` execs it: its API-server
/// client (kube, k8s-openapi, rustls) would otherwise sit in the text of the binary every
/// node's device plugin runs, spreading `serve`'s code over more pages (peak RSS +2.8 MiB).
/// A constant, so the optimiser drops the driver from `nicplug` entirely.
const RUNS_DRA: bool = matches!(env!("CARGO_BIN_NAME").as_bytes(), b"nicplug-dra");

/// `nicplug dra ...`: the same arguments to `nicplug-dra` beside this binary.
fn exec_dra() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let dra = match std::env::current_exe() {
        Ok(me) => me.with_file_name("nicplug-dra"),
        Err(e) => {
            eprintln!("error: finding this binary to run nicplug-dra beside it: {e}");
            return ExitCode::from(2);
        }
    };
    let err = std::process::Command::new(&dra)
        .arg0("nicplug")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!(
        "error: running {}: {err}; fix: install nicplug-dra from the same build beside nicplug",
        dra.display()
    );
    ExitCode::from(2)
}

pub fn main() -> ExitCode {
    let legacy = match translate_args() {
        Ok(t) => t,
        Err(e) => {
            // Go's flag package exits 2 on a bad flag too.
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(&legacy.args);
    if !RUNS_DRA && matches!(cli.command, Command::Dra(_)) {
        return exec_dra();
    }
    // An explicit --log wins; the SR-IOV plugin's verbosity otherwise; warn without either.
    let filter = match (&cli.host.log, legacy.verbosity) {
        (Some(f), _) => f.clone(),
        (None, Some(v)) => nicplug::legacy::log_filter(v),
        (None, None) => "warn".to_string(),
    };
    let logs = tracing_subscriber::fmt()
        // netlink-packet-route warns about every attribute newer than itself: not ours to act on.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(format!("netlink_packet_route=error,{filter}"))
                .expect("validated by log_filter"),
        )
        .with_writer(OneLine);
    match cli.host.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    if legacy.verbosity.is_some() {
        match &cli.host.log {
            Some(f) => tracing::info!(
                "SR-IOV plugin command line: --log {f} given, so -v/--log-level is not used"
            ),
            None => tracing::info!(
                filter,
                "SR-IOV plugin command line: verbosity {} as log filter",
                legacy.verbosity.unwrap_or_default()
            ),
        }
    }
    for note in &legacy.notes {
        tracing::info!("SR-IOV plugin flag accepted, {note}");
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let args = &cli.host;
    match cli.command {
        Command::Discover { output } => {
            let (host, pools) = load(args)?;
            match output {
                Output::Table => out(&report::discover_table(&host, &pools))?,
                Output::Json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&report::discover_report(&host, &pools))?
                ))?,
            }
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let file = match file.or_else(|| args.config.clone()) {
                Some(f) => f,
                None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
                None => bail!(
                    "config check needs a file: nicplug config check FILE, or --config FILE \
                     (or {DEFAULT_CONFIG})"
                ),
            };
            return config_check(&file, args);
        }
        Command::Allocate {
            resource,
            ids,
            cdi,
            cdi_version,
        } => {
            let (host, pools) = load(args)?;
            let cdi = cdi.then_some(cdi_version.as_str());
            let response = allocate(args, host, &pools, &resource, &ids, cdi)?;
            out(&format!("{}\n", serde_json::to_string_pretty(&response)?))?;
        }
        Command::Serve {
            kubelet_dir,
            device_info_dir,
            no_device_info,
            rescan_interval,
            cdi,
            metrics_addr,
            pod_resources_socket,
            health_addr,
        } => {
            let Some(config_path) = args.config.clone().or_else(|| {
                Path::new(DEFAULT_CONFIG)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_CONFIG))
            }) else {
                bail!("serve needs a config: --config FILE (or {DEFAULT_CONFIG})");
            };
            let pod_resources_socket = pod_resources_socket
                .unwrap_or_else(|| kubelet_dir.join("pod-resources").join("kubelet.sock"));
            let opts = serve::ServeOptions {
                metrics_addr,
                health_addr,
                pod_resources_socket,
                paths: HostPaths {
                    kubelet_dir,
                    device_info_dir,
                    cdi_dir: cdi.cdi_dir,
                    ..paths(args)
                },
                cdi_version: cdi.cdi.then_some(cdi.cdi_version),
                config_path,
                default_prefix: args.resource_prefix.clone(),
                rescan_interval: std::time::Duration::from_secs(rescan_interval),
                device_info: !no_device_info,
            };
            tune_malloc();
            // Two workers: a pool answering a big call never holds up the others' sockets.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let result = runtime.block_on(serve::run(opts));
            // Sockets are gone by now: file writes still queued may not hold up the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result?;
        }
        Command::Dra(dra_cmd::DraCommand::Kubelet(dra)) if RUNS_DRA => {
            return dra_run(args, *dra);
        }
        Command::Cdi {
            output_dir,
            cdi_version,
        } => return cdi_specs(args, output_dir.as_deref(), &cdi_version),
        Command::Doctor {
            output,
            devices,
            eal_args,
        } => {
            let input = nicplug::doctor::Input::from_process(paths(args), devices);
            if eal_args {
                out(&format!("{}\n", nicplug::doctor::eal_args(&input)?))?;
                return Ok(ExitCode::SUCCESS);
            }
            let report = nicplug::doctor::run(&input);
            match output {
                Output::Table => out(&nicplug::doctor::render::table(
                    &report,
                    std::io::stdout().is_terminal(),
                ))?,
                Output::Json => out(&format!("{}\n", nicplug::doctor::render::json(&report)))?,
            }
            return Ok(match report.ok {
                true => ExitCode::SUCCESS,
                false => ExitCode::from(1),
            });
        }
        Command::Probe {
            kubelet_dir,
            liveness,
        } => {
            let dir = kubelet_dir.join("device-plugins");
            let results = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve::probe(&dir, !liveness))
                .with_context(|| format!("listing {}", dir.display()))?;
            // No socket at all is a daemon that serves nothing (not started, or no pool).
            let mut ok = !results.is_empty();
            let mut text = String::new();
            for (name, err) in &results {
                match err {
                    None => text.push_str(&format!("ok    {name}\n")),
                    Some(e) => {
                        ok = false;
                        text.push_str(&format!("FAIL  {name}: {e}\n"));
                    }
                }
            }
            if results.is_empty() {
                text.push_str(&format!(
                    "FAIL  no nicplug plugin sockets in {}\n",
                    dir.display()
                ));
            }
            out(&text)?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Demo => demo()?,
        Command::Dra(_) if !RUNS_DRA => bail!("nicplug dra runs in nicplug-dra"),
        Command::Dra(cmd) => dra_cmd::run(
            cmd,
            dra_cmd::Ctx {
                config: load_config(args)?,
                config_path: args
                    .config
                    .clone()
                    .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists())),
                paths: paths(args),
                resource_prefix: args.resource_prefix.clone(),
            },
        )?,
        Command::Sample(SampleCommand::Write {
            dir,
            spec,
            generated,
            force,
        }) => {
            let spec = match (spec, generated) {
                (Some(file), _) => fixture::load(&file)?,
                (None, Some((pfs, vfs))) => fixture::generated(pfs, vfs),
                (None, None) => fixture::sample_node(),
            };
            if force {
                clear_host(&dir)?;
            }
            write_host(&spec, &dir)?;
            out(&format!(
                "sample node written to {0}\ntry: nicplug --host-root {0} --config {0}/config.json discover\n",
                dir.display()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// glibc malloc settings for the long-running daemon.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // Set explicitly, the threshold stops growing as big blocks are freed, so big discovery
    // buffers stay mmapped and go back to the OS when freed instead of swelling the heap.
    // glibc gives each thread that meets a locked arena a new one (up to 8 per core), and
    // the pages an arena touched stay resident while any block in them lives: with the
    // runtime's workers, its blocking threads and discovery's readers that was megabytes of
    // half-empty arenas. One arena: a second held as much again as the first, half empty
    // (1,024 functions: 12.6-12.7 -> 12.1-12.4 MiB peak); start-up and Allocate did not slow.
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// `nicplug dra`: the kubelet side of the DRA driver.
fn dra_run(args: &HostArgs, dra: DraArgs) -> Result<ExitCode> {
    use nicplug::dra::{inventory, kubelet, prepare, publish};
    let source: std::sync::Arc<dyn prepare::ClaimSource> = match dra.claims_from_dir {
        Some(dir) => std::sync::Arc::new(prepare::DirClaimSource { dir }),
        None => std::sync::Arc::new(nicplug::dra::claims::ApiClaimSource::new(
            dra.node_name.clone(),
        )),
    };
    let config_path = args.config.clone().or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG))
    });
    let paths = HostPaths {
        cdi_dir: dra.cdi_dir,
        device_info_dir: dra.device_info_dir,
        ..paths(args)
    };
    let src = inventory::Source {
        paths: paths.clone(),
        config: dra_cmd::required_config(config_path)?,
        default_prefix: args.resource_prefix.clone(),
        rescan: std::time::Duration::from_secs(dra.rescan_interval),
        device_plugin_record: Some(
            dra.device_plugins_dir
                .join(nicplug::inventory::claims::STATE_FILE),
        ),
    };
    let opts = kubelet::DraOptions {
        paths,
        registry_dir: dra.plugins_registry,
        plugins_dir: dra.plugins_dir,
        node_name: dra.node_name,
        cdi_version: dra.cdi_version,
        device_info: !dra.no_device_info,
    };
    // A node daemon like `serve`, with the same inventory: the same allocator settings.
    tune_malloc();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first: a TERM before the sockets are served must still remove them.
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        };
        // One inventory (the device plugin's core) for both sides of the driver.
        let (inventory, rx) = inventory::start(&src).await?;
        let publisher = match dra.publish_slices {
            true => {
                let p = publish::Publisher::new(dra_cmd::client().await?, &opts.node_name);
                Some(tokio::spawn(p.run(rx.clone())))
            }
            false => None,
        };
        let served = kubelet::run(opts, source, rx, stop).await;
        if let Some(p) = publisher {
            p.abort();
        }
        inventory.stop();
        anyhow::Ok(served?)
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

/// The host roots, absolute: they become host paths in container edits and CDI specs, which a
/// runtime resolves from its own working directory, not ours.
fn paths(args: &HostArgs) -> HostPaths {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match &args.host_root {
        Some(root) => HostPaths::under(&abs(root)),
        None => HostPaths {
            sysfs_root: abs(&args.sysfs_root),
            dev_root: abs(&args.dev_root),
            proc_root: abs(&args.proc_root),
            ..HostPaths::default()
        },
    }
}

/// Write command output to stdout. A reader that went away (`nicplug doctor | head -1`) is
/// not an error: the output is simply not wanted any more.
fn out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The argument list with the SR-IOV plugin's flags made nicplug's (see [`nicplug::legacy`]).
fn translate_args() -> Result<nicplug::legacy::Translated, nicplug::legacy::LegacyError> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut subcommands = vec!["help".to_string()];
    let mut value_flags = Vec::new();
    let mut takes_values = |c: &clap::Command| {
        for a in c.get_arguments() {
            if a.get_action().takes_values()
                && let Some(long) = a.get_long()
            {
                value_flags.push(long.to_string());
                value_flags.extend(a.get_all_aliases().into_iter().flatten().map(String::from));
            }
        }
    };
    takes_values(&cmd);
    for sub in cmd.get_subcommands() {
        subcommands.push(sub.get_name().to_string());
        subcommands.extend(sub.get_all_aliases().map(String::from));
        if sub.get_name() == "serve" {
            takes_values(sub);
        }
    }
    nicplug::legacy::translate(
        std::env::args_os().collect(),
        &nicplug::legacy::Grammar {
            subcommands: &subcommands,
            value_flags: &value_flags,
        },
    )
}

/// `--log`: every directive must mean something. tracing's own parser reads a misspelt level
/// (`wran`) as a target name and then logs nothing: here a bare word must be a level, and
/// targets are written `target=level`.
fn log_filter(s: &str) -> Result<String, String> {
    use tracing::level_filters::LevelFilter;
    const LEVELS: &str = "off, error, warn, info, debug, trace";
    if s.trim().is_empty() {
        return Err(format!("empty; give a level ({LEVELS})"));
    }
    for d in s.split(',').map(str::trim) {
        if d.is_empty() || d.contains('[') {
            continue;
        }
        let (target, level) = match d.rsplit_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, d),
        };
        if target.is_some_and(str::is_empty) || level.parse::<LevelFilter>().is_err() {
            return Err(match target {
                None => format!(
                    "{d:?} is not a level ({LEVELS}); to filter by module write target=level, \
                     e.g. nicplug=debug"
                ),
                Some(_) => format!("{d:?}: expected target=level with a level of {LEVELS}"),
            });
        }
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?}: {e}"))
}

/// stderr, one line per event: a message with a line break (a config error listing its
/// problems) is written with `\n` escapes, so log collectors keep the event whole.
struct OneLine;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLine {
    type Writer = OneLine;
    fn make_writer(&'a self) -> OneLine {
        OneLine
    }
}

impl std::io::Write for OneLine {
    /// tracing's fmt layer hands over each event whole, in one call.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut line = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(b),
            }
        }
        line.push(b'\n');
        std::io::stderr().lock().write_all(&line)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The config named on the command line, or the SR-IOV plugin's default path if it exists, or
/// none (every function is then shown unpooled).
fn load_config(args: &HostArgs) -> Result<Config> {
    match &args.config {
        Some(path) => Ok(config::parse_config_file(path)?),
        None if Path::new(DEFAULT_CONFIG).exists() => {
            Ok(config::parse_config_file(Path::new(DEFAULT_CONFIG))?)
        }
        None => Ok(Config::default()),
    }
}

fn load(args: &HostArgs) -> Result<(Host, Pools)> {
    let config = load_config(args)?;
    let host = host::discover(&paths(args))?;
    for s in &host.skipped {
        tracing::warn!(function = %s.address, file = %s.file.display(), "skipping function: {}", s.reason);
    }
    let pools = pools::build(&host, &config, &args.resource_prefix);
    Ok((host, pools))
}

/// What the daemon answers for `ids`: the same view (health from the sysfs snapshot, as the
/// daemon starts with), the same refusals, and in CDI mode the same `cdi_devices` answer.
fn allocate(
    args: &HostArgs,
    host: Host,
    pools: &Pools,
    resource: &str,
    ids: &[String],
    cdi_version: Option<&str>,
) -> Result<nicplug::api::ContainerAllocateResponse> {
    let Some(pool) = pools.pool(resource) else {
        let known: Vec<&str> = pools.pools.iter().map(|p| p.name.as_str()).collect();
        bail!("no pool named {resource:?}; pools: {}", known.join(", "));
    };
    let paths = paths(args);
    let view = nicplug::inventory::PoolView::new(
        pool.clone(),
        std::sync::Arc::new(host),
        std::sync::Arc::new(paths.clone()),
        &nicplug::health::LinkStates::new(),
    );
    let edits = view.allocate(ids)?;
    if let Some(version) = cdi_version {
        match nicplug::cdi::spec(pool, &view.host, &paths, version) {
            Ok((spec, _)) => {
                if let Some(r) = nicplug::cdi::Published::of(&spec).response(&edits, ids) {
                    return Ok(r);
                }
            }
            // The daemon answers without CDI then, and says so.
            Err(e) => eprintln!(
                "no CDI spec for {}: {e}; answering as without --cdi",
                pool.name
            ),
        }
    }
    Ok(render::allocate_response(&edits))
}

/// `nicplug cdi`: every pool with devices as a spec; problems on stderr (exit 2), the rest
/// still written.
fn cdi_specs(args: &HostArgs, output_dir: Option<&Path>, version: &str) -> Result<ExitCode> {
    use nicplug::cdi;
    let (host, pools) = load(args)?;
    let (mut specs, mut failed) = (Vec::new(), false);
    for pool in &pools.pools {
        match cdi::spec(pool, &host, &paths(args), version) {
            Ok((spec, skipped)) => {
                for s in skipped {
                    eprintln!("{}: {} left out: {}", pool.name, s.id, s.why);
                }
                specs.push((cdi::file_name(&pool.name), spec));
            }
            Err(cdi::CdiError::NoDevices { pool }) => {
                eprintln!("{pool}: no devices on this node, no spec")
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    match output_dir {
        None => println!(
            "{}",
            serde_json::to_string_pretty(&specs.iter().map(|(_, s)| s).collect::<Vec<_>>())?
        ),
        Some(dir) => {
            let mut out = cdi::SpecDir::new(dir);
            for (name, spec) in &specs {
                out.write(name, cdi::to_json(spec).as_bytes())
                    .with_context(|| format!("writing {}", dir.join(name).display()))?;
                println!("{}", dir.join(name).display());
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn config_check(file: &Path, args: &HostArgs) -> Result<ExitCode> {
    let checked = config::parse_config_file(file).and_then(|config| {
        let plugin_dir = Path::new(nicplug::identity::DEFAULT_PLUGIN_DIR);
        nicplug::identity::check(&config, &args.resource_prefix, plugin_dir).map(|()| config)
    });
    match checked {
        Ok(config) => {
            for r in &config.resources {
                let selectors = r.selectors.len();
                println!(
                    "ok  {}  deviceType={}  selectors={selectors}{}",
                    r.full_name(&args.resource_prefix),
                    r.device_type.as_str(),
                    if r.selectors.iter().any(|s| s.is_rdma) {
                        "  isRdma"
                    } else {
                        ""
                    }
                );
            }
            for r in &config.shared {
                println!(
                    "ok  {}  shared RDMA  rdmaHcaMax={}",
                    r.full_name(),
                    r.rdma_hca_max
                );
            }
            println!(
                "{}: {} resource(s), valid",
                file.display(),
                config.resources.len() + config.shared.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::from(2))
        }
    }
}

/// The same rule as `resourcePrefix` in the config: it names resources and files.
fn resource_prefix(s: &str) -> Result<String, String> {
    if config::is_dns_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err("must be a lower-case DNS subdomain, e.g. nvidia.com".into())
    }
}

fn parse_generated(s: &str) -> Result<(u32, u32), String> {
    let (pfs, vfs) = s.split_once('x').ok_or("expected PFSxVFS, e.g. 8x127")?;
    let n = |v: &str| v.parse::<u32>().map_err(|e| format!("{v:?}: {e}"));
    let (pfs, vfs) = (n(pfs)?, n(vfs)?);
    if pfs == 0 || pfs > 62 || vfs > 255 {
        return Err("PFS must be 1..=62 and VFS 0..=255".into());
    }
    Ok((pfs, vfs))
}

/// `sample write --force`: remove what a previous `sample write` put in `dir`, and only that.
fn clear_host(dir: &Path) -> Result<()> {
    for sub in ["sys", "dev", "proc"] {
        let p = dir.join(sub);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .with_context(|| format!("removing {}", p.display()))?;
    }
    match std::fs::remove_file(dir.join("config.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.join("config.json").display()))
        }
        _ => Ok(()),
    }
}

/// Materialise a host and the sample config beside it.
fn write_host(spec: &fixture::HostSpec, dir: &Path) -> Result<HostPaths> {
    let paths = fixture::materialize(spec, dir)
        .with_context(|| format!("writing a simulated node into {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), fixture::sample_config())?;
    Ok(paths)
}

fn demo() -> Result<()> {
    let exe = std::env::current_exe()?;
    let text = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(nicplug::demo::run(&exe, std::io::stdout().is_terminal()))?;
    print!("{text}");
    Ok(())
}
