//! CDI specs: content (exact JSON), names, the Allocate answer in CDI mode, and the spec
//! directory's atomic writes and removals, on the materialised sample node.

use nicplug::cdi::{self, CdiError, SpecDir};
use nicplug::config::{Format, parse_config};
use nicplug::host::{self, Host};
use nicplug::pools::{self, Pool, Pools};
use nicplug::{HostPaths, edits, fixture, render};
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

struct Node {
    tmp: tempfile::TempDir,
    paths: HostPaths,
    host: Host,
    pools: Pools,
}

fn sample() -> Node {
    sample_with(fixture::sample_config())
}

fn sample_with(config: &str) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let paths = fixture::materialize(&fixture::sample_node(), tmp.path()).unwrap();
    let host = host::discover(&paths).unwrap();
    let pools = pools::build(
        &host,
        &parse_config(config, Format::Json).unwrap(),
        "intel.com",
    );
    Node {
        tmp,
        paths,
        host,
        pools,
    }
}

impl Node {
    fn pool(&self, name: &str) -> &Pool {
        self.pools.pool(name).unwrap()
    }
    fn spec(&self, name: &str) -> cdi::Spec {
        let (spec, skipped) = cdi::spec(
            self.pool(name),
            &self.host,
            &self.paths,
            cdi::DEFAULT_VERSION,
        )
        .unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        spec
    }
    fn root(&self) -> String {
        self.tmp.path().display().to_string()
    }
}

#[test]
fn vf_device_carries_rdma_nodes_counters_mount_and_its_own_env_exactly() {
    let n = sample();
    let spec = n.spec("nvidia.com/cx6dx_vf");
    assert_eq!(spec.cdi_version, "0.5.0");
    assert_eq!(spec.kind, "nvidia.com/cx6dx_vf");
    let dev = spec
        .devices
        .iter()
        .find(|d| d.name == "0000:3b:00.2")
        .unwrap();
    let port = "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1";
    let expected = r#"{
  "name": "0000:3b:00.2",
  "containerEdits": {
    "env": [
      "NICPLUG_DEVICE_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=0000:3b:00.2",
      "NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF_0000_3B_00_2=-a 0000:3b:00.2 --iova-mode=va"
    ],
    "deviceNodes": [
      {
        "path": "/dev/infiniband/uverbs2",
        "hostPath": "ROOT/dev/infiniband/uverbs2",
        "type": "c",
        "major": 231,
        "minor": 194,
        "permissions": "rw"
      },
      {
        "path": "/dev/infiniband/rdma_cm",
        "hostPath": "ROOT/dev/infiniband/rdma_cm",
        "type": "c",
        "major": 10,
        "minor": 56,
        "permissions": "rw"
      },
      {
        "path": "/dev/infiniband/umad2",
        "hostPath": "ROOT/dev/infiniband/umad2",
        "type": "c",
        "major": 231,
        "minor": 2,
        "permissions": "rw"
      },
      {
        "path": "/dev/infiniband/issm2",
        "hostPath": "ROOT/dev/infiniband/issm2",
        "type": "c",
        "major": 231,
        "minor": 66,
        "permissions": "rw"
      }
    ],
    "mounts": [
      {
        "hostPath": "ROOT/sys/PORT",
        "containerPath": "/sys/PORT",
        "options": [
          "ro",
          "nosuid",
          "nodev",
          "noexec",
          "rbind",
          "rprivate"
        ],
        "type": "bind"
      }
    ]
  }
}"#
    .replace("ROOT", &n.root())
    .replace("PORT", port);
    assert_eq!(serde_json::to_string_pretty(dev).unwrap(), expected);
}

#[test]
fn spec_file_is_the_whole_document_and_reads_back() {
    let n = sample();
    let spec = n.spec("nvidia.com/cx6dx_vf");
    let text = cdi::to_json(&spec);
    assert!(text.starts_with(
        "{\n  \"cdiVersion\": \"0.5.0\",\n  \"kind\": \"nvidia.com/cx6dx_vf\",\n  \"devices\": ["
    ));
    assert!(text.ends_with("}\n"));
    let back: cdi::Spec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
    // Every pooled function, sorted, and nothing else at the top level.
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    let mut ids: Vec<&str> = n
        .pool("nvidia.com/cx6dx_vf")
        .devices
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    ids.sort();
    assert_eq!(names, ids);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cdiVersion", "devices", "kind"]);
}

#[test]
fn cdi_device_has_exactly_the_nodes_and_mounts_of_the_edits() {
    let n = sample();
    for name in [
        "nvidia.com/cx6dx_vf",
        "nvidia.com/cx6dx_pf",
        "nvidia.com/intel_vfio",
    ] {
        let pool = n.pool(name);
        let spec = n.spec(name);
        for d in &spec.devices {
            let e = edits::container_edits(pool, &n.host, &n.paths, std::slice::from_ref(&d.name))
                .unwrap();
            let ce = &d.container_edits;
            let nodes: Vec<(&str, String)> = e
                .devices
                .iter()
                .map(|x| (x.container_path.as_str(), x.host_path.display().to_string()))
                .collect();
            let cdi_nodes: Vec<(&str, String)> = ce
                .device_nodes
                .iter()
                .map(|x| (x.path.as_str(), x.host_path.clone()))
                .collect();
            assert_eq!(cdi_nodes, nodes, "{name} {}", d.name);
            for (x, y) in ce.device_nodes.iter().zip(&e.devices) {
                assert_eq!((x.major, x.minor), (y.major, y.minor));
                assert_eq!(x.node_type.is_some(), y.major.is_some());
            }
            let mounts: Vec<(&str, String)> = e
                .mounts
                .iter()
                .map(|m| (m.container_path.as_str(), m.host_path.display().to_string()))
                .collect();
            let cdi_mounts: Vec<(&str, String)> = ce
                .mounts
                .iter()
                .map(|m| (m.container_path.as_str(), m.host_path.clone()))
                .collect();
            assert_eq!(cdi_mounts, mounts, "{name} {}", d.name);
            // Only per-device variables: never the joined-list ones.
            assert!(
                ce.env.iter().all(|v| v.starts_with("NICPLUG_")
                    && v.split('=')
                        .next()
                        .unwrap()
                        .ends_with(&cdi::env_id(&d.name))),
                "{:?}",
                ce.env
            );
        }
    }
}

#[test]
fn vfio_nodes_without_numbers_leave_them_to_the_runtime() {
    let n = sample();
    let spec = n.spec("nvidia.com/intel_vfio");
    let text = serde_json::to_string(&spec.devices[0].container_edits.device_nodes).unwrap();
    let root = n.root();
    assert_eq!(
        text,
        format!(
            r#"[{{"path":"/dev/vfio/vfio","hostPath":"{root}/dev/vfio/vfio","permissions":"rw"}},{{"path":"/dev/vfio/87","hostPath":"{root}/dev/vfio/87","permissions":"rw"}}]"#
        )
    );
    assert!(spec.devices[0].container_edits.mounts.is_empty());
}

#[test]
fn names_device_ids_are_cdi_device_names_unchanged() {
    for id in ["0000:3b:00.2", "0000:af:00.0", "mlx5_core.sf.4", "a"] {
        assert_eq!(cdi::device_name(id).unwrap(), id);
    }
    for bad in ["", ":0000", "0000:3b:00.", "a/b", "a b", "a=b", "é"] {
        assert!(cdi::device_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        cdi::qualified_name("nvidia.com/cx6dx_vf", "0000:3b:00.2"),
        "nvidia.com/cx6dx_vf=0000:3b:00.2"
    );
    assert_eq!(cdi::env_id("0000:3b:00.2"), "0000_3B_00_2");
    assert_eq!(cdi::env_id("mlx5_core.sf.4"), "MLX5_CORE_SF_4");
    assert_eq!(
        cdi::file_name("nvidia.com/cx6dx_vf"),
        "nicplug-nvidia.com_cx6dx_vf.json"
    );
}

fn one_pool(prefix: &str, name: &str) -> String {
    format!(
        r#"{{"resourceList":[{{"resourceName":"{name}","resourcePrefix":"{prefix}",
            "selectors":{{"vendors":["15b3"],"devices":["101e"],"isRdma":true}}}}]}}"#
    )
}

#[test]
fn kinds_follow_the_cdi_rules_of_the_version() {
    let n = sample();
    let pool = n.pool("nvidia.com/cx6dx_vf");
    assert_eq!(cdi::kind(pool, "0.5.0").unwrap(), "nvidia.com/cx6dx_vf");

    // A dot in the class needs 0.6.0 (the config refuses dots in resource names; a pool built
    // otherwise is checked all the same).
    let mut dotted = n.pool("nvidia.com/cx6dx_vf").clone();
    dotted.resource_name = "cx6.vf".into();
    dotted.name = "nvidia.com/cx6.vf".into();
    let pool = &dotted;
    let err = cdi::kind(pool, "0.5.0").unwrap_err();
    assert!(err.to_string().contains("0.6.0"), "{err}");
    assert_eq!(cdi::kind(pool, "0.6.0").unwrap(), "nvidia.com/cx6.vf");
    assert!(matches!(
        cdi::spec(pool, &n.host, &n.paths, "0.5.0"),
        Err(CdiError::BadKind { .. })
    ));
    let (spec, _) = cdi::spec(pool, &n.host, &n.paths, "0.6.0").unwrap();
    assert_eq!(spec.cdi_version, "0.6.0");

    // A class must start with a letter.
    let n = sample_with(&one_pool("example.com", "6wind_vf"));
    let err = cdi::kind(n.pool("example.com/6wind_vf"), "0.5.0").unwrap_err();
    assert!(err.to_string().contains("start with a letter"), "{err}");

    // Versions below 0.5.0 cannot name PCI addresses (a leading digit).
    let n = sample();
    assert!(matches!(
        cdi::spec(n.pool("nvidia.com/cx6dx_vf"), &n.host, &n.paths, "0.4.0"),
        Err(CdiError::OldVersion(_))
    ));
}

#[test]
fn a_pool_without_devices_has_no_spec() {
    let n = sample_with(
        r#"{"resourceList":[{"resourceName":"none","resourcePrefix":"example.com",
            "selectors":{"vendors":["dead"]}}]}"#,
    );
    assert!(matches!(
        cdi::spec(n.pool("example.com/none"), &n.host, &n.paths, "0.5.0"),
        Err(CdiError::NoDevices { .. })
    ));
}

#[test]
fn allocate_in_cdi_mode_keeps_envs_and_names_the_devices() {
    let n = sample();
    let pool = n.pool("nvidia.com/cx6dx_vf");
    let spec = n.spec("nvidia.com/cx6dx_vf");
    let published = cdi::Published::of(&spec);
    let ids = vec!["0000:3b:00.2".to_string(), "0000:3b:01.2".to_string()];
    let e = edits::container_edits(pool, &n.host, &n.paths, &ids).unwrap();
    let plain = render::allocate_response(&e);
    let r = published.response(&e, &ids).unwrap();
    assert_eq!(r.envs, plain.envs);
    assert_eq!(
        r.envs["PCIDEVICE_NVIDIA_COM_CX6DX_VF"],
        "0000:3b:00.2,0000:3b:01.2"
    );
    assert_eq!(r.annotations, plain.annotations);
    assert!(r.devices.is_empty() && r.mounts.is_empty());
    let names: Vec<&str> = r.cdi_devices.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nvidia.com/cx6dx_vf=0000:3b:00.2",
            "nvidia.com/cx6dx_vf=0000:3b:01.2"
        ]
    );
    // An ID the written spec lacks: no CDI answer (the caller falls back to devices/mounts).
    let mut partial = published.clone();
    partial.devices.remove("0000:3b:01.2");
    assert!(partial.response(&e, &ids).is_none());
}

fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn spec_dir_writes_whole_files_only_when_changed_and_removes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cdi");
    let mut out = SpecDir::new(&dir);
    let a = "nicplug-nvidia.com-a.json";
    let b = "nicplug-nvidia.com-b.json";

    assert!(out.write(a, b"{\"v\":1}\n").unwrap());
    assert!(out.write(b, b"{\"v\":2}\n").unwrap());
    assert_eq!(files(&dir), [a, b]);
    let mode = std::fs::metadata(dir.join(a)).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // Same contents: untouched (same inode); new contents: replaced by rename (new inode).
    let before = inode(&dir.join(a));
    assert!(!out.write(a, b"{\"v\":1}\n").unwrap());
    assert_eq!(inode(&dir.join(a)), before);
    assert!(out.write(a, b"{\"v\":3}\n").unwrap());
    assert_ne!(inode(&dir.join(a)), before);
    assert_eq!(std::fs::read(dir.join(a)).unwrap(), b"{\"v\":3}\n");
    // Deleted behind our back: written again.
    std::fs::remove_file(dir.join(a)).unwrap();
    assert!(out.write(a, b"{\"v\":3}\n").unwrap());

    // retain: what is not kept goes; other files stay.
    std::fs::write(dir.join("vendor.json"), "{}").unwrap();
    let keep = BTreeSet::from([b.to_string()]);
    assert_eq!(out.retain(&keep).unwrap(), [a]);
    assert_eq!(files(&dir), [b, "vendor.json"]);
    assert_eq!(out.remove_all().unwrap(), [b]);
    assert_eq!(files(&dir), ["vendor.json"]);

    // Only nicplug-*.json names.
    for bad in [
        "vendor.json",
        "nicplug-x.yaml",
        "../nicplug-x.json",
        "nicplug-a/b.json",
    ] {
        assert!(out.write(bad, b"{}").is_err(), "{bad}");
        assert!(out.remove(bad).is_err(), "{bad}");
    }
}

#[test]
fn spec_dir_removes_files_of_an_earlier_run_but_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in [
        "nicplug-nvidia.com-old.json",
        ".nicplug-nvidia.com-old.json.123.tmp",
        ".nicplug.Xy3kQ9aBc1dE.tmp",
        "vendor.json",
        "nicplug-notes.txt",
    ] {
        std::fs::write(dir.join(f), "{}").unwrap();
    }
    let mut out = SpecDir::new(dir);
    out.write("nicplug-nvidia.com-new.json", b"{}").unwrap();
    assert_eq!(
        out.remove_stale().unwrap(),
        [
            ".nicplug-nvidia.com-old.json.123.tmp",
            ".nicplug.Xy3kQ9aBc1dE.tmp",
            "nicplug-nvidia.com-old.json"
        ]
    );
    assert_eq!(
        files(dir),
        [
            "nicplug-notes.txt",
            "nicplug-nvidia.com-new.json",
            "vendor.json"
        ]
    );
    // A missing directory is no error.
    let mut none = SpecDir::new(dir.join("absent"));
    assert!(none.remove_stale().unwrap().is_empty());
}

#[test]
fn a_reader_never_sees_half_a_spec() {
    let n = sample();
    let big = cdi::to_json(&n.spec("nvidia.com/cx6dx_vf"));
    let small = cdi::to_json(&n.spec("nvidia.com/cx6dx_pf"));
    assert!(big.len() > 16 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let name = "nicplug-nvidia.com-x.json";
    let mut out = SpecDir::new(&dir);
    out.write(name, small.as_bytes()).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, stop, big, small) = (dir.clone(), stop.clone(), big.clone(), small.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = std::fs::read_to_string(dir.join(name)).unwrap();
                assert!(
                    got == big || got == small,
                    "a torn read of {} bytes",
                    got.len()
                );
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        let body = if i % 2 == 0 { &big } else { &small };
        out.write(name, body.as_bytes()).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(files(&dir), [name], "no temp file left behind");
}
