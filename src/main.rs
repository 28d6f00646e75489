//! The `nicplug` command line: thin edges over the library.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nicplug::config::{self, Config};
use nicplug::host::{self, Host};
use nicplug::pools::{self, Pools};
use nicplug::{HostPaths, edits, fixture, render, report, serve};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        never privileged.\n\nTry it without a NIC: `nicplug demo`."
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
    /// Resource config: the SR-IOV network device plugin's config.json (JSON or YAML)
    #[arg(long, global = true, env = "NICPLUG_CONFIG")]
    config: Option<PathBuf>,
    /// Prefix of resource names without their own resourcePrefix (the SR-IOV plugin's default)
    #[arg(
        long,
        global = true,
        default_value = "intel.com",
        env = "NICPLUG_RESOURCE_PREFIX"
    )]
    resource_prefix: String,
    /// Log filter (tracing syntax), e.g. `warn`, `nicplug=debug`
    #[arg(long, global = true, default_value = "warn", env = "NICPLUG_LOG")]
    log: String,
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
    /// IDs: an operator's preview of what a pod gets
    Allocate {
        /// Resource name, with or without prefix (`nvidia.com/cx6dx_vf` or `cx6dx_vf`)
        #[arg(long)]
        resource: String,
        /// Device IDs (PCI addresses) as kubelet would request them
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run the kubelet device plugin daemon: one plugin per pool, registered with kubelet,
    /// kept in step with the host (uevents, link state, config changes, kubelet restarts)
    Serve {
        /// Kubelet's state directory; plugin sockets go in its device-plugins/
        #[arg(long, default_value = "/var/lib/kubelet", env = "NICPLUG_KUBELET_DIR")]
        kubelet_dir: PathBuf,
        /// Where to write CNI device-info files (`--device-info-dir ''` disables them)
        #[arg(
            long,
            default_value = "/var/run/k8s.cni.cncf.io/devinfo/dp",
            env = "NICPLUG_DEVICE_INFO_DIR"
        )]
        device_info_dir: PathBuf,
        /// Seconds between safety-net rescans (changes are picked up from events at once)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        rescan_interval: u64,
    },
    /// Show nicplug on the bundled sample node (no NIC, no root needed): discovery, pools and
    /// what a DPDK pod gets for one VF
    Demo,
    /// The bundled sample node
    #[command(subcommand)]
    Sample(SampleCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exit 0 with a one-line summary per pool, or exit 2 with every problem found
    Check {
        /// The config file (JSON, or YAML by extension .yaml/.yml)
        file: PathBuf,
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
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        // netlink-packet-route warns about every attribute newer than itself: not ours to act on.
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "netlink_packet_route=error,{}",
            cli.host.log
        )))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
                Output::Table => print!("{}", report::discover_table(&host, &pools)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report::discover_report(&host, &pools))?
                ),
            }
        }
        Command::Config(ConfigCommand::Check { file }) => return config_check(&file, args),
        Command::Allocate { resource, ids } => {
            let (host, pools) = load(args)?;
            let response = allocate(args, &host, &pools, &resource, &ids)?;
            println!("{}", serde_json::to_string_pretty(&response)?);
        }
        Command::Serve {
            kubelet_dir,
            device_info_dir,
            rescan_interval,
        } => {
            let Some(config_path) = args.config.clone().or_else(|| {
                Path::new(DEFAULT_CONFIG)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_CONFIG))
            }) else {
                bail!("serve needs a config: --config FILE (or {DEFAULT_CONFIG})");
            };
            let opts = serve::ServeOptions {
                paths: HostPaths {
                    kubelet_dir,
                    device_info_dir: device_info_dir.clone(),
                    ..paths(args)
                },
                config_path,
                default_prefix: args.resource_prefix.clone(),
                rescan_interval: std::time::Duration::from_secs(rescan_interval),
                device_info: !device_info_dir.as_os_str().is_empty(),
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve::run(opts))?;
        }
        Command::Demo => demo(args)?,
        Command::Sample(SampleCommand::Write {
            dir,
            spec,
            generated,
        }) => {
            let spec = match (spec, generated) {
                (Some(file), _) => fixture::load(&file)?,
                (None, Some((pfs, vfs))) => fixture::generated(pfs, vfs),
                (None, None) => fixture::sample_node(),
            };
            write_host(&spec, &dir)?;
            println!(
                "sample node written to {0}\ntry: nicplug --host-root {0} --config {0}/config.json discover",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn paths(args: &HostArgs) -> HostPaths {
    match &args.host_root {
        Some(root) => HostPaths::under(root),
        None => HostPaths {
            sysfs_root: args.sysfs_root.clone(),
            dev_root: args.dev_root.clone(),
            proc_root: args.proc_root.clone(),
            ..HostPaths::default()
        },
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

fn allocate(
    args: &HostArgs,
    host: &Host,
    pools: &Pools,
    resource: &str,
    ids: &[String],
) -> Result<nicplug::api::ContainerAllocateResponse> {
    let Some(pool) = pools.pool(resource) else {
        let known: Vec<&str> = pools.pools.iter().map(|p| p.name.as_str()).collect();
        bail!("no pool named {resource:?}; pools: {}", known.join(", "));
    };
    let edits = edits::container_edits(pool, host, &paths(args), ids)?;
    Ok(render::allocate_response(&edits))
}

fn config_check(file: &Path, args: &HostArgs) -> Result<ExitCode> {
    match config::parse_config_file(file) {
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
            println!(
                "{}: {} resource(s), valid",
                file.display(),
                config.resources.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            Ok(ExitCode::from(2))
        }
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

/// Materialise a host and the sample config beside it.
fn write_host(spec: &fixture::HostSpec, dir: &Path) -> Result<HostPaths> {
    let paths = fixture::materialize(spec, dir)
        .with_context(|| format!("writing a simulated node into {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), fixture::sample_config())?;
    Ok(paths)
}

fn demo(args: &HostArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_host(&fixture::sample_node(), dir.path())?;
    let args = HostArgs {
        host_root: Some(dir.path().to_path_buf()),
        config: Some(dir.path().join("config.json")),
        resource_prefix: args.resource_prefix.clone(),
        sysfs_root: args.sysfs_root.clone(),
        dev_root: args.dev_root.clone(),
        proc_root: args.proc_root.clone(),
        log: args.log.clone(),
    };
    let (host, pools) = load(&args)?;
    println!(
        "== a simulated node (bundled sample, in {})\n",
        dir.path().display()
    );
    print!("{}", report::discover_table(&host, &pools));

    let Some((pool, device)) = pools
        .pools
        .iter()
        .find_map(|p| p.devices.first().map(|d| (p, d)))
    else {
        bail!("the sample config pools no device");
    };
    println!(
        "\n== a DPDK pod asks for 1 x {}; kubelet calls Allocate([{}]) and the container gets:\n",
        pool.name, device.id
    );
    let response = allocate(
        &args,
        &host,
        &pools,
        &pool.name,
        std::slice::from_ref(&device.id),
    )?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
