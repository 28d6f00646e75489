//! Real libibverbs as the oracle: the device nodes `nicplug allocate` returns are exactly what
//! `ibv_get_device_list()` needs to see the allocated VF, and nothing else.
//!
//! A fresh `/dev` (tmpfs) in a private mount namespace holds only the returned nodes, made with
//! the numbers of the fixture's host nodes; Debian's `ibv_devices` reads the fixture sysfs through
//! `SYSFS_PATH`. Needs root (mount namespace, mknod); without it the test says so and passes.

use serde_json::Value;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

fn nicplug(root: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .arg("--host-root")
        .arg(root)
        .arg("--config")
        .arg(root.join("config.json"))
        .args(args)
        .output()
        .expect("run nicplug");
    assert!(
        out.status.success(),
        "nicplug {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Run `ibv_devices` in a private mount namespace whose `/dev` holds only `nodes`
/// (container path, major, minor); return the listed ibdev names.
fn ibv_devices_with(sysfs: &Path, nodes: &[(String, u64, u64)]) -> Vec<String> {
    let mut script = String::from("set -e\nmount -t tmpfs -o mode=755 nicplug-test-dev /dev\n");
    for (path, major, minor) in nodes {
        let dir = Path::new(path).parent().unwrap().display().to_string();
        script += &format!("mkdir -p {dir}\nmknod -m 666 {path} c {major} {minor}\n");
    }
    script += "exec ibv_devices\n";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", &script])
        .env("SYSFS_PATH", sysfs)
        .output()
        .expect("run unshare + ibv_devices (apt-get install ibverbs-utils ibverbs-providers util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stdout.is_empty(),
        "ibv_devices: {stdout}{stderr}"
    );
    // Rows after the "------" underline: "<ibdev> <guid>".
    stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The nodes of an allocate response, with numbers read from their host paths.
fn nodes_of(response: &Value) -> Vec<(String, u64, u64)> {
    response["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let host = d["host_path"].as_str().unwrap();
            let meta = std::fs::metadata(host).expect("host node exists");
            assert!(meta.file_type().is_char_device(), "{host} is a char device");
            let rdev = meta.rdev();
            let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
            (
                d["container_path"].as_str().unwrap().to_string(),
                u64::from(major),
                u64::from(minor),
            )
        })
        .collect()
}

fn rdma_dev(response: &Value, id: &str) -> String {
    let key = response["envs"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("PCIDEVICE_") && k.ends_with("_INFO"))
        .unwrap()
        .clone();
    let info: Value = serde_json::from_str(response["envs"][&key].as_str().unwrap()).unwrap();
    info[id]["rdma"]["rdma_dev"].as_str().unwrap().to_string()
}

#[path = "common/prereq.rs"]
mod prereq;

#[test]
fn ibv_devices_sees_exactly_the_allocated_vf() {
    // Root: a mount namespace and mknod.
    let why = prereq::missing(true, &["unshare", "ibv_devices"]);
    if !prereq::runnable("ibv_devices oracle", why) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let status = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .args(["sample", "write"])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    let sysfs = root.join("sys");

    let (a, b) = ("0000:3b:00.2", "0000:3b:00.5");
    let resp_a = nicplug(root, &["allocate", "--resource", "cx6dx_vf", a]);
    let resp_b = nicplug(root, &["allocate", "--resource", "cx6dx_vf", b]);
    let (dev_a, dev_b) = (rdma_dev(&resp_a, a), rdma_dev(&resp_b, b));
    assert_ne!(dev_a, dev_b);

    assert_eq!(
        ibv_devices_with(&sysfs, &nodes_of(&resp_a)),
        vec![dev_a.clone()]
    );
    assert_eq!(ibv_devices_with(&sysfs, &nodes_of(&resp_b)), vec![dev_b]);
    // The field report's failure 2: no node, no device.
    assert_eq!(ibv_devices_with(&sysfs, &[]), Vec::<String>::new());
}
