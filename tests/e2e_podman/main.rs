//! Real podman (Debian 12: podman 4.3 with crun) running containers from nicplug's CDI specs on
//! the simulated sample node: `podman run --device nvidia.com/cx6dx_vf=0000:3b:00.2` gives the
//! container the RDMA nodes (real major:minor, nothing else openable), the read-only counters
//! mount and the per-device env, exactly as the spec says; on a device-class host, a vfio
//! no-IOMMU group, a UIO and a vhost-vdpa node arrive as nicplug maps them.
//!
//! Needs root, `podman`, `unshare` and `busybox-static` (scripts/test.sh installs them); skipped
//! with a message otherwise, failed instead with `CI=true`. Podman runs in a
//! private mount namespace (tests/e2e_podman/podman.sh) so nothing outside sees its /run or
//! spec directory.
//!
//! Test scaffolding, never in nicplug's output: the counters mount's target
//! (`/sys/devices/pci0000:3a/...`) does not exist in a container's sysfs on a machine without
//! the NIC, and runtimes cannot create mount points in sysfs; the test binds an empty read-only
//! skeleton of that path over `/sys/devices` first. `bare_counters_mount_needs_the_real_sysfs`
//! shows the mount failing without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const VF: &str = "0000:3b:00.2";
const VF2: &str = "0000:3b:01.2";
const PORT: &str = "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1";
const PORT2: &str = "devices/pci0000:3a/0000:3a:00.0/0000:3b:01.2/infiniband/mlx5_10/ports/1";
const IMAGE: &str = "localhost/nicplug-busybox:test";

struct Rig {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    node: PathBuf,
    cdi: PathBuf,
    skeleton: PathBuf,
}

#[path = "../common/prereq.rs"]
mod prereq;

fn missing() -> Option<String> {
    prereq::missing(true, &["podman", "unshare", "tar"]).or_else(|| {
        (!Path::new("/bin/busybox").exists())
            .then(|| "/bin/busybox (busybox-static) is not installed".into())
    })
}

/// The rig, or `None` (skip) when this machine cannot run it.
fn rig() -> Option<&'static Rig> {
    static RIG: OnceLock<Option<Rig>> = OnceLock::new();
    RIG.get_or_init(|| prereq::runnable("podman end-to-end test", missing()).then(build_rig))
        .as_ref()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn nicplug(node: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nicplug"));
    c.arg("--host-root")
        .arg(node)
        .arg("--config")
        .arg(node.join("config.json"));
    c
}

/// The rig on the device-class host below (vfio no-IOMMU, UIO, vhost-vdpa).
fn classes_rig() -> Option<&'static Rig> {
    static RIG: OnceLock<Option<Rig>> = OnceLock::new();
    RIG.get_or_init(|| {
        rig()?;
        Some(build_rig_on(Some((CLASSES_HOST, CLASSES_CONFIG))))
    })
    .as_ref()
}

const CLASSES_HOST: &str = r#"
vfio_noiommu: true
functions:
  - {address: "0000:00:05.0", vendor: "8086", device: "1889", driver: vfio-pci, iommu_group: 0}
  - {address: "0000:00:08.0", vendor: "8086", device: "1889", driver: uio_pci_generic}
  - address: "0000:00:09.0"
    vendor: 15b3
    device: 101e
    driver: mlx5_core
    netdev: {name: ens9}
    vdpa: {name: vdpa0, driver: vhost_vdpa, index: 0}
"#;

const CLASSES_CONFIG: &str = r#"{"resourceList":[
  {"resourceName":"vfio","resourcePrefix":"nvidia.com","selectors":{"drivers":["vfio-pci"]}},
  {"resourceName":"uio","resourcePrefix":"nvidia.com","selectors":{"drivers":["uio_pci_generic"]}},
  {"resourceName":"vhost","resourcePrefix":"nvidia.com","selectors":{"vdpaType":"vhost"}}]}"#;

fn build_rig() -> Rig {
    build_rig_on(None)
}

/// A rig on the sample node, or on `(host YAML, config JSON)`.
fn build_rig_on(host: Option<(&str, &str)>) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let node = work.join("node");
    let cdi = work.join("cdi");
    let mut write = Command::new(env!("CARGO_BIN_EXE_nicplug"));
    write.args(["sample", "write"]).arg(&node);
    if let Some((spec, _)) = host {
        std::fs::write(work.join("host.yaml"), spec).unwrap();
        write.arg("--spec").arg(work.join("host.yaml"));
    }
    run(&mut write);
    if let Some((_, config)) = host {
        std::fs::write(node.join("config.json"), config).unwrap();
    }
    // The product: static specs, as `serve --cdi` writes them (tests/serve/test_cdi.py shows
    // the two are the same).
    run(nicplug(&node).arg("cdi").arg("--output-dir").arg(&cdi));

    // Test scaffolding: the empty skeleton of the counters mounts' targets.
    let skeleton = work.join("skeleton");
    for port in [PORT, PORT2] {
        std::fs::create_dir_all(skeleton.join(port)).unwrap();
    }

    // A busybox-static image, imported from a tar: no registry.
    let rootfs = work.join("rootfs");
    for d in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ls", "cat", "env", "grep", "mknod", "touch", "echo", "sort", "head",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(work.join("rootfs.tar"))
        .arg("."));
    std::fs::write(
        work.join("containers.conf"),
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let rig = Rig {
        _tmp: tmp,
        work,
        node,
        cdi,
        skeleton,
    };
    let tar = rig.work.join("rootfs.tar");
    run(&mut rig.podman(&["import".as_ref(), tar.as_os_str(), IMAGE.as_ref()]));
    rig
}

impl Rig {
    fn podman(&self, args: &[&std::ffi::OsStr]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e_podman/podman.sh"))
            .arg(&self.cdi)
            .arg("--root")
            .arg(self.work.join("storage"))
            .arg("--runroot")
            .arg(self.work.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.work.join("containers.conf"));
        c
    }

    /// `podman run --rm --network none [--mount skeleton] --device ...=<id>... IMAGE sh -c SCRIPT`.
    fn run_container(&self, ids: &[&str], skeleton: bool, script: &str) -> Output {
        let cdi: Vec<String> = ids
            .iter()
            .flat_map(|id| ["--device".to_string(), format!("nvidia.com/cx6dx_vf={id}")])
            .collect();
        self.run_with(cdi, skeleton, script)
    }

    /// `podman run --rm --network none [--mount skeleton] EXTRA... IMAGE sh -c SCRIPT`.
    /// One at a time: each run moves hugetlb between cgroup hierarchies (see podman.sh).
    fn run_with(&self, extra: Vec<String>, skeleton: bool, script: &str) -> Output {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--network=none".into()];
        if skeleton {
            args.push("--mount".into());
            args.push(format!(
                "type=bind,src={},dst=/sys/devices,ro=true",
                self.skeleton.join("devices").display()
            ));
        }
        args.extend(extra);
        args.extend([IMAGE.into(), "/bin/sh".into(), "-c".into(), script.into()]);
        let os: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        self.podman(&os)
            .output()
            .unwrap_or_else(|e| panic!("podman: {e}"))
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `crw...  maj, min ... name` lines of `ls -l`, as (name, "maj, min").
fn nodes(ls: &str) -> Vec<(String, String)> {
    ls.lines()
        .filter(|l| l.starts_with('c'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[f.len() - 1].to_string(), format!("{} {}", f[4], f[5]))
        })
        .collect()
}

#[test]
fn one_vf_gets_its_nodes_counters_and_env_and_nothing_else() {
    let Some(rig) = rig() else { return };
    let port = format!("/sys/{PORT}");
    let script = format!(
        "echo '== ls'; ls -l /dev/infiniband; \
         echo '== env'; env | grep ^NICPLUG_ | sort; \
         echo '== counters'; ls {port}; cat {port}/state; \
         echo '== mountinfo'; grep ' {port} ' /proc/self/mountinfo; \
         echo '== write'; touch {port}/x 2>&1; \
         echo '== open allocated'; cat /dev/infiniband/uverbs2 2>&1; \
         echo '== mknod other'; mknod /tmp/x c 231 193 2>&1 && cat /tmp/x 2>&1; \
         echo '== end'"
    );
    let out = rig.run_container(&[VF], true, &script);
    let (stdout, stderr) = text(&out);
    println!("{stdout}");
    assert!(out.status.success(), "podman failed:\n{stdout}\n{stderr}");
    let section = |name: &str| -> String {
        let start = stdout.find(&format!("== {name}\n")).unwrap() + name.len() + 4;
        let end = stdout[start..]
            .find("\n== ")
            .map_or(stdout.len(), |i| start + i);
        stdout[start..end].to_string()
    };

    // Exactly the four nodes of the spec, with sysfs's numbers.
    assert_eq!(
        nodes(&section("ls")),
        [
            ("issm2".to_string(), "231, 66".to_string()),
            ("rdma_cm".into(), "10, 56".into()),
            ("umad2".into(), "231, 2".into()),
            ("uverbs2".into(), "231, 194".into()),
        ]
    );
    assert_eq!(
        section("env").trim(),
        "NICPLUG_DEVICE_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=0000:3b:00.2\n\
         NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=-a 0000:3b:00.2 --iova-mode=va"
    );
    // The host's port directory (hw_counters and all), read-only.
    let counters = section("counters");
    assert!(counters.contains("hw_counters"), "{counters}");
    let state = std::fs::read_to_string(rig.node.join("sys").join(PORT).join("state")).unwrap();
    assert!(counters.contains(state.trim()), "{counters}");
    let mi = section("mountinfo");
    let fields: Vec<&str> = mi.split_whitespace().collect();
    assert!(fields[5].split(',').any(|o| o == "ro"), "{mi}");
    assert!(section("write").contains("Read-only file system"));
    // The device cgroup allowed the node (no driver here: ENXIO), denied any other.
    assert!(
        section("open allocated").contains("No such device or address"),
        "{stdout}"
    );
    assert!(
        section("mknod other").contains("Operation not permitted"),
        "{stdout}"
    );
}

#[test]
fn two_vfs_compose() {
    let Some(rig) = rig() else { return };
    let out = rig.run_container(
        &[VF, VF2],
        true,
        &format!(
            "ls -l /dev/infiniband; env | grep ^NICPLUG_ | sort; ls -d /sys/{PORT}/hw_counters /sys/{PORT2}/hw_counters"
        ),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "podman failed:\n{stdout}\n{stderr}");
    let names: Vec<String> = nodes(&stdout).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "issm10", "issm2", "rdma_cm", "umad10", "umad2", "uverbs10", "uverbs2"
        ]
    );
    let env: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("NICPLUG_"))
        .collect();
    assert_eq!(
        env,
        [
            "NICPLUG_DEVICE_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=0000:3b:00.2",
            "NICPLUG_DEVICE_NVIDIA_COM_CX6DX_VF_0000_3B_01_2=0000:3b:01.2",
            "NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=-a 0000:3b:00.2 --iova-mode=va",
            "NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF_0000_3B_01_2=-a 0000:3b:01.2 --iova-mode=va",
        ]
    );
    assert!(stdout.contains(&format!("/sys/{PORT2}/hw_counters")));
}

/// Without the test's skeleton the counters mount has no target in this machine's sysfs and
/// the runtime refuses it: the skeleton is scaffolding for a NIC-less machine, not the product.
#[test]
fn bare_counters_mount_needs_the_real_sysfs() {
    let Some(rig) = rig() else { return };
    let out = rig.run_container(&[VF], false, "true");
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "ran without the skeleton:\n{stdout}\n{stderr}"
    );
    // crun: "mkdir `/sys/devices/pci0000:3a`: Operation not permitted".
    assert!(stderr.contains("/sys/devices/pci0000:3a"), "{stderr}");
}

/// A device name the specs do not hold is refused by podman's CDI resolution.
#[test]
fn unknown_device_is_refused() {
    let Some(rig) = rig() else { return };
    let out = rig.run_container(&["0000:99:00.0"], true, "true");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("0000:99:00.0"), "{stderr}");
}

/// The plain path, without CDI: `nicplug allocate`'s devices, mounts and envs handed to podman
/// as `--device`, `--mount` and `--env`, the way a runtime applies kubelet's mapping.
#[test]
fn plain_devices_mounts_and_env_from_allocate() {
    let Some(rig) = rig() else { return };
    let out = run(nicplug(&rig.node).args(["allocate", "--resource", "cx6dx_vf", VF]));
    let car: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut extra = Vec::new();
    for d in car["devices"].as_array().unwrap() {
        extra.push("--device".to_string());
        extra.push(format!(
            "{}:{}:{}",
            d["host_path"].as_str().unwrap(),
            d["container_path"].as_str().unwrap(),
            d["permissions"].as_str().unwrap()
        ));
    }
    for m in car["mounts"].as_array().unwrap() {
        assert_eq!(m["read_only"], true);
        extra.push("--mount".to_string());
        extra.push(format!(
            "type=bind,src={},dst={},ro=true",
            m["host_path"].as_str().unwrap(),
            m["container_path"].as_str().unwrap()
        ));
    }
    for (k, v) in car["envs"].as_object().unwrap() {
        extra.push("--env".to_string());
        extra.push(format!("{k}={}", v.as_str().unwrap()));
    }
    let port = format!("/sys/{PORT}");
    let script = format!(
        "ls -l /dev/infiniband; echo ==; env | grep -E '^(PCIDEVICE|NICPLUG)_' | sort; \
         cat {port}/hw_counters/out_of_buffer; touch {port}/x 2>&1; \
         mknod /tmp/x c 231 193 2>&1 && cat /tmp/x 2>&1; cat /dev/infiniband/uverbs2 2>&1; true"
    );
    let out = rig.run_with(extra, true, &script);
    let (stdout, stderr) = text(&out);
    println!("{stdout}");
    assert!(out.status.success(), "podman failed:\n{stdout}\n{stderr}");
    let ls = stdout.split("\n==\n").next().unwrap();
    let names: Vec<String> = nodes(ls).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["issm2", "rdma_cm", "umad2", "uverbs2"]);
    assert!(stdout.contains("PCIDEVICE_NVIDIA_COM_CX6DX_VF=0000:3b:00.2"));
    assert!(stdout.contains("NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF=-a 0000:3b:00.2 --iova-mode=va"));
    let oob = std::fs::read_to_string(
        rig.node
            .join("sys")
            .join(PORT)
            .join("hw_counters/out_of_buffer"),
    )
    .unwrap();
    assert!(stdout.contains(oob.trim()), "{stdout}");
    assert!(stdout.contains("Read-only file system"), "{stdout}");
    assert!(stdout.contains("Operation not permitted"), "{stdout}");
    assert!(stdout.contains("No such device or address"), "{stdout}");
}

/// Device classes through a real runtime: the no-IOMMU group node appears under its group
/// number (with the host's `noiommu-N` device number), the UIO and vhost-vdpa nodes as they
/// are, and the EAL arguments keep physical addresses for the first two.
#[test]
fn device_classes_reach_the_container() {
    let Some(rig) = classes_rig() else { return };
    let devices: Vec<String> = [
        "nvidia.com/vfio=0000:00:05.0",
        "nvidia.com/uio=0000:00:08.0",
        "nvidia.com/vhost=0000:00:09.0",
    ]
    .iter()
    .flat_map(|d| ["--device".to_string(), d.to_string()])
    .collect();
    let out = rig.run_with(
        devices,
        false,
        "ls -l /dev/vfio /dev/uio0 /dev/vhost-vdpa-0; echo ==; env | grep ^NICPLUG_ | sort",
    );
    let (stdout, stderr) = text(&out);
    println!("{stdout}");
    assert!(out.status.success(), "podman failed:\n{stdout}\n{stderr}");
    let (ls, env) = stdout.split_once("\n==\n").unwrap();
    let mut found = nodes(ls);
    found.sort();
    assert_eq!(
        found,
        [
            ("/dev/uio0".to_string(), "241, 0".to_string()),
            ("/dev/vhost-vdpa-0".into(), "240, 0".into()),
            ("0".into(), "243, 0".into()),
            ("vfio".into(), "10, 196".into()),
        ]
    );
    assert!(!ls.contains("noiommu"), "{ls}");
    let env: Vec<&str> = env.lines().filter(|l| l.contains("EAL_ARGS")).collect();
    assert_eq!(
        env,
        [
            "NICPLUG_EAL_ARGS_NVIDIA_COM_UIO_0000_00_08_0=-a 0000:00:08.0",
            "NICPLUG_EAL_ARGS_NVIDIA_COM_VFIO_0000_00_05_0=-a 0000:00:05.0",
            "NICPLUG_EAL_ARGS_NVIDIA_COM_VHOST_0000_00_09_0=-a 0000:00:09.0 --iova-mode=va",
        ]
    );
}

/// The RDMA shared mode's rig: the shared-mode fixture host with the network-operator's
/// example config (one shared pool over both ConnectX-6 ports).
fn shared_rig() -> Option<&'static Rig> {
    static RIG: OnceLock<Option<Rig>> = OnceLock::new();
    RIG.get_or_init(|| {
        rig()?;
        let rig = build_rig_on(Some((
            include_str!("../data/rdma-shared/shared-node.yaml"),
            include_str!("../data/rdma-shared/network-operator-example.json"),
        )));
        for port in SHARED_PORTS {
            std::fs::create_dir_all(rig.skeleton.join(port)).unwrap();
        }
        Some(rig)
    })
    .as_ref()
}

const SHARED_PORTS: [&str; 2] = [
    "devices/pci0000:80/0000:80:01.0/0000:81:00.0/infiniband/mlx5_4/ports/1",
    "devices/pci0000:80/0000:80:01.0/0000:81:00.1/infiniband/mlx5_5/ports/1",
];

/// Two containers of one shared pool (one after the other: the rig runs one at a time) each
/// get both HCAs' nodes with sysfs's numbers, both ports' counters read-only, and the env
/// naming the HCAs; the device cgroup lets them open those nodes and no other.
#[test]
fn two_containers_share_the_hcas_of_a_shared_pool() {
    let Some(rig) = shared_rig() else { return };
    let script = format!(
        "ls -l /dev/infiniband; echo '== rest'; env | grep ^NICPLUG_ | sort; \
         ls /sys/{0}/hw_counters >/dev/null && echo ok-counters0; \
         ls /sys/{1}/hw_counters >/dev/null && echo ok-counters1; \
         touch /sys/{0}/x 2>&1; cat /dev/infiniband/uverbs5 2>&1; \
         mknod /tmp/x c 231 192 2>&1 && cat /tmp/x 2>&1; echo end",
        SHARED_PORTS[0], SHARED_PORTS[1]
    );
    let device = vec![
        "--device".to_string(),
        "rdma/rdma_shared_device_a=hcas".to_string(),
    ];
    for container in ["first", "second"] {
        let out = rig.run_with(device.clone(), true, &script);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "{container}: podman failed:\n{stdout}\n{stderr}"
        );
        let ls = stdout.split("== rest").next().unwrap_or_default();
        assert_eq!(
            nodes(ls),
            [
                ("issm4".to_string(), "231, 68".to_string()),
                ("issm5".into(), "231, 69".into()),
                ("rdma_cm".into(), "10, 56".into()),
                ("umad4".into(), "231, 4".into()),
                ("umad5".into(), "231, 5".into()),
                ("uverbs4".into(), "231, 196".into()),
                ("uverbs5".into(), "231, 197".into()),
            ],
            "{container}: {stdout}"
        );
        let env: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("NICPLUG_"))
            .collect();
        assert_eq!(
            env,
            [
                "NICPLUG_RDMA_IBDEVS_RDMA_RDMA_SHARED_DEVICE_A=mlx5_4,mlx5_5",
                "NICPLUG_RDMA_PCI_RDMA_RDMA_SHARED_DEVICE_A=0000:81:00.0,0000:81:00.1",
            ],
            "{container}"
        );
        for want in [
            "ok-counters0",
            "ok-counters1",
            "Read-only file system",
            "No such device or address",
            "Operation not permitted",
            "end",
        ] {
            assert!(
                stdout.contains(want),
                "{container}: no {want:?} in\n{stdout}"
            );
        }
    }
}

/// A DRA claim for one VF, prepared by the driver's pipeline (as `nicplug dra` does on
/// NodePrepareResources) into its per-claim spec: podman consumes `nicplug.io/claim=...` and
/// the container gets the device plugin's nodes, counters mount and pool-wide env (the spec's
/// top-level edits); unprepare removes the spec.
#[test]
fn dra_claim_spec_reaches_the_container() {
    use nicplug::dra::model::{AllocatedDevice, ClaimAllocation, ClaimRef};
    use nicplug::dra::prepare::Preparer;
    let Some(rig) = rig() else { return };
    let paths = nicplug::HostPaths {
        cdi_dir: rig.cdi.clone(),
        device_info_dir: rig.work.join("devinfo-dra"),
        ..nicplug::HostPaths::under(&rig.node)
    };
    let host = nicplug::host::discover(&paths).unwrap();
    let config = nicplug::config::parse_config_file(&rig.node.join("config.json")).unwrap();
    let pools = nicplug::pools::build(&host, &config, "intel.com");
    let state = rig.work.join("dra-state");
    let preparer = Preparer::new(paths.clone(), &state, "0.5.0", true).unwrap();
    let uid = "4b1f0c3e-7d2a-4f5b-9c8e-0a1b2c3d4e5f";
    let alloc = ClaimAllocation {
        claim: ClaimRef {
            namespace: "default".into(),
            name: "dpdk".into(),
            uid: uid.into(),
        },
        devices: vec![AllocatedDevice {
            request: "nic".into(),
            pool: "node1".into(),
            device: "pci-0000-3b-00-2".into(),
        }],
        config: Vec::new(),
    };
    let prepared = preparer
        .prepare(&alloc, &host, &pools, &Default::default())
        .unwrap();
    let id = prepared[0].cdi_device_ids[0].clone();
    assert_eq!(id, format!("nicplug.io/claim={uid}-pci-0000-3b-00-2"));
    let port = format!("/sys/{PORT}");
    let script = format!(
        "echo '== ls'; ls -l /dev/infiniband; \
         echo '== env'; env | grep -E '^(PCIDEVICE|NICPLUG)_' | grep -v _INFO= | sort; \
         echo '== info'; env | grep -c '^PCIDEVICE_NVIDIA_COM_CX6DX_VF_INFO='; \
         echo '== counters'; ls {port}; \
         echo '== end'"
    );
    let out = rig.run_with(vec!["--device".into(), id], true, &script);
    let (stdout, stderr) = text(&out);
    println!("{stdout}");
    assert!(out.status.success(), "podman failed:\n{stdout}\n{stderr}");
    let section = |name: &str| -> String {
        let start = stdout.find(&format!("== {name}\n")).unwrap() + name.len() + 4;
        let end = stdout[start..]
            .find("\n== ")
            .map_or(stdout.len(), |i| start + i);
        stdout[start..end].to_string()
    };
    assert_eq!(
        nodes(&section("ls")),
        [
            ("issm2".to_string(), "231, 66".to_string()),
            ("rdma_cm".into(), "10, 56".into()),
            ("umad2".into(), "231, 2".into()),
            ("uverbs2".into(), "231, 194".into()),
        ]
    );
    assert_eq!(
        section("env").trim(),
        "NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF=-a 0000:3b:00.2 --iova-mode=va\n\
         PCIDEVICE_NVIDIA_COM_CX6DX_VF=0000:3b:00.2"
    );
    assert_eq!(section("info").trim(), "1");
    assert!(section("counters").contains("hw_counters"), "{stdout}");

    preparer.unprepare(uid).unwrap();
    assert!(
        !rig.cdi
            .join(format!("nicplug.io-claim_{uid}.json"))
            .exists()
    );
    assert_eq!(
        std::fs::read_dir(rig.work.join("devinfo-dra"))
            .unwrap()
            .count(),
        0
    );
}
