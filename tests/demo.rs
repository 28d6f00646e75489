//! The README's main command, run as a new user would: it must show the node, the registered
//! pools, what a DPDK pod gets, the doctor's verdict for that pod's view (and for the same pod
//! without its uverbs node) and the health update kubelet receives when a PF loses its carrier:
//! exactly that PF's VFs, the one whose own link is down included, turn Unhealthy.

use std::process::Command;

#[test]
fn demo_runs_the_whole_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_nicplug"))
        .arg("demo")
        .output()
        .expect("run nicplug demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
    for want in [
        "0000:3b:00.2    ConnectX VF",
        "nvidia.com/cx6dx_vf      15 devices, 15 healthy",
        "healthy (own link down: ignored)",
        "GetPreferredAllocation picks 0000:3b:00.2",
        "device  /dev/infiniband/uverbs2          231:194  rw",
        "mount   /sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1 (read-only)",
        "env     NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF=-a 0000:3b:00.2 --iova-mode=va",
        "5. PF 0000:3b:00.0 (ens1f0) loses its carrier; kubelet receives",
        "15 devices; unhealthy: 0000:3b:00.2, 0000:3b:00.3, 0000:3b:00.4, 0000:3b:00.5, \
         0000:3b:00.6, 0000:3b:00.7, 0000:3b:01.0, 0000:3b:01.1\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    // The doctor's verdict for the allocated pod: every check, in its section.
    let verdict = section(&text, "4. nicplug doctor's verdict for that pod's view");
    assert!(
        verdict.contains("simulated pod's view")
            && verdict
                .contains("`nicplug doctor` inside a real pod reads the real /sys, /dev and /proc"),
        "{verdict}"
    );
    let real_nodes = !verdict.contains("mknod is not permitted here");
    for check in [
        "allocation",
        "host-sysfs",
        "function 0000:3b:00.2",
        "netdev 0000:3b:00.2",
        "uverbs 0000:3b:00.2",
        "counters 0000:3b:00.2",
        "iova",
        "hugepages",
        "memlock",
        "net-raw",
        "sys-admin",
    ] {
        let line = verdict
            .lines()
            .find(|l| {
                l.trim_start()
                    .get("PASS  ".len()..)
                    .is_some_and(|rest| rest.starts_with(&format!("{check} ")))
            })
            .unwrap_or_else(|| panic!("no {check} line in:\n{verdict}"));
        let want = if check.starts_with("uverbs") && !real_nodes {
            "FAIL"
        } else {
            "PASS"
        };
        assert!(line.trim_start().starts_with(want), "{check}: {line}");
    }
    assert!(
        verdict.contains("netdev 0000:3b:00.2    net1 is in this network namespace"),
        "{verdict}"
    );
    if real_nodes {
        assert!(
            verdict.contains("/dev/infiniband/uverbs2 231:194 matches sysfs"),
            "{verdict}"
        );
        assert!(
            verdict.contains("ok: 11 passed, 0 warning(s), 0 failed"),
            "{verdict}"
        );
    }
    // The contrast: the same pod without the uverbs node, failing with its fix.
    let contrast = verdict
        .split("the same pod without /dev/infiniband/uverbs2 (field report failure 2):")
        .nth(1)
        .unwrap_or_else(|| panic!("no contrast in:\n{verdict}"));
    let line = contrast.lines().find(|l| !l.trim().is_empty()).unwrap();
    assert!(
        line.trim_start()
            .starts_with("FAIL  uverbs 0000:3b:00.2  /dev/infiniband/uverbs2 missing"),
        "{line}"
    );
    assert!(
        line.contains("fix: allocate the function through a resource with isRdma"),
        "{line}"
    );
    assert!(
        !verdict.contains("/pod/"),
        "pod paths are shown as the pod sees them:\n{verdict}"
    );
}

/// The text from the heading `head` to the next numbered heading.
fn section<'a>(text: &'a str, head: &str) -> &'a str {
    let start = text
        .find(head)
        .unwrap_or_else(|| panic!("no {head:?} in:\n{text}"));
    let rest = &text[start + head.len()..];
    let end = rest.find("\n5. ").unwrap_or(rest.len());
    &rest[..end]
}
