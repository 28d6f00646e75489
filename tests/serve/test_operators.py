"""The DaemonSets that sriov-network-operator and NVIDIA network-operator render for the SR-IOV
network device plugin, with only the image swapped: nicplug gets their exact argument lists,
no subcommand, a ConfigMap-mounted config (kubelet's `..data` symlink layout) that an update
swaps, and no pod resources socket.

Only what a test cannot change on the real host is redirected, through nicplug's environment
variables (the arguments stay byte for byte): the sysfs/dev/proc roots, kubelet's directory,
the device-info and CDI directories, and for the NVIDIA operator (which passes no
--config-file) the config path.
"""

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from harness import SAMPLE_POOLS, nicplug_bin, wait_for

NODE_NAME = "worker-1"


def configmap(base, key, config, stamp):
    """kubelet's AtomicWriter: `..<stamp>/<key>`, `..data -> ..<stamp>`, `<key> -> ..data/<key>`
    on first use; later calls swap `..data` atomically and delete the old directory."""
    base.mkdir(exist_ok=True)
    d = base / f"..{stamp}"
    d.mkdir()
    (d / key).write_text(json.dumps(config, indent=2))
    data = base / "..data"
    old = data.resolve() if data.is_symlink() else None
    tmp = base / "..data_tmp"
    os.symlink(d.name, tmp)
    os.rename(tmp, data)
    if not (base / key).is_symlink():
        os.symlink(f"..data/{key}", base / key)
    if old is not None:
        for entry in old.iterdir():
            entry.unlink()
        old.rmdir()


def redirected(node, cdi=False, **more):
    env = {
        "NICPLUG_SYSFS_ROOT": str(node.root / "sys"),
        "NICPLUG_DEV_ROOT": str(node.root / "dev"),
        "NICPLUG_PROC_ROOT": str(node.root / "proc"),
        "NICPLUG_KUBELET_DIR": str(node.kubelet_dir),
        "NICPLUG_DEVICE_INFO_DIR": str(node.device_info_dir),
    }
    if cdi:
        # Only with --use-cdi: the CDI options require --cdi, also when set from the
        # environment.
        env["NICPLUG_CDI_DIR"] = str(node.base / "cdi")
    env.update(more)
    return env


def without_prefix(config):
    """The operator renders resources without resourcePrefix; --resource-prefix names them."""
    config = json.loads(json.dumps(config))
    for r in config["resourceList"]:
        r.pop("resourcePrefix", None)
    return config


def renamed_vfio(config):
    config = json.loads(json.dumps(config))
    for r in config["resourceList"]:
        if r["resourceName"] == "intel_vfio":
            r["resourceName"] = "e810_vfio"
    return config


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def probe(node):
    return subprocess.run([str(nicplug_bin()), "probe", "--kubelet-dir", str(node.kubelet_dir)],
                          capture_output=True, text=True, timeout=30)


def check_log_lines(d):
    """Every line on stderr is one whole event (no continuation lines)."""
    logs = d.stderr_path.read_text()
    for line in logs.splitlines():
        assert any(f" {lvl} " in line for lvl in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")), \
            f"not a log event: {line!r}\n{logs}"
    return logs


@pytest.mark.parametrize("use_cdi", [False, True], ids=["devices", "use-cdi"])
def test_sriov_network_operator_daemonset(node, kubelet, daemons, use_cdi):
    cm = node.base / "pcidp"
    configmap(cm, NODE_NAME, without_prefix(json.loads(node.config.read_text())), "2026_01_01.1")
    # bindata/manifests/plugins/sriov-device-plugin.yaml, $(NODE_NAME) expanded by kubelet.
    args = ["--log-level=10", "--resource-prefix=openshift.io",
            f"--config-file={cm}/{NODE_NAME}"] + (["--use-cdi"] if use_cdi else [])
    d = daemons.start(node, args=args, env=redirected(node, cdi=use_cdi))
    pools = [p.replace("nvidia.com/", "openshift.io/") for p in SAMPLE_POOLS]
    kubelet.wait_all_registered(pools, timeout=15)

    (got,) = kubelet.allocate("openshift.io/cx6dx_vf", [["0000:3b:00.2"]])
    assert got["envs"]["PCIDEVICE_OPENSHIFT_IO_CX6DX_VF"] == "0000:3b:00.2"
    info = json.loads(got["envs"]["PCIDEVICE_OPENSHIFT_IO_CX6DX_VF_INFO"])
    assert info["0000:3b:00.2"]["rdma"]["rdma_dev"] == "mlx5_2"
    if use_cdi:
        assert got["cdi_devices"] == [{"name": "openshift.io/cx6dx_vf=0000:3b:00.2"}]
        assert not got["devices"]
        assert any((node.base / "cdi").iterdir())
    else:
        assert "/dev/infiniband/uverbs2" in [x["container_path"] for x in got["devices"]]
    device_info = node.device_info_dir / "openshift.io-cx6dx_vf-0000:3b:00.2-device.json"
    assert json.loads(device_info.read_text())["pci"]["rdma-device"] == "mlx5_2"

    # The operator updates the ConfigMap: kubelet swaps ..data; nicplug reloads.
    configmap(cm, NODE_NAME, renamed_vfio(without_prefix(json.loads(node.config.read_text()))),
              "2026_01_01.2")
    reg = kubelet.wait_registered("openshift.io/e810_vfio", timeout=10)
    assert [x.id for x in reg.conn.latest()] == ["0000:5e:01.0"]

    logs = check_log_lines(d)
    assert "registered with kubelet" in logs  # --log-level=10 shows nicplug's info lines
    assert "config reloaded" in logs
    assert "pod resources" not in logs  # no socket, no metrics: nothing to say


@pytest.mark.parametrize("use_cdi", [False, True], ids=["devices", "use-cdi"])
def test_nvidia_network_operator_daemonset(node, kubelet, daemons, use_cdi):
    cm = node.base / "pcidp"
    configmap(cm, "config.json", json.loads(node.config.read_text()), "2026_01_01.1")
    # manifests/state-sriov-device-plugin/0030-sriov-dp-daemonset.yaml
    args = ["--log-dir=sriovdp", "--log-level=10"] + (["--use-cdi"] if use_cdi else [])
    port = free_port()
    env = redirected(node, cdi=use_cdi, NICPLUG_CONFIG=str(cm / "config.json"),
                     NICPLUG_HEALTH_ADDR=f"127.0.0.1:{port}")
    d = daemons.start(node, args=args, env=env)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 10,
             what="/readyz to say ready")
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    ok = probe(node)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    configmap(cm, "config.json", renamed_vfio(json.loads(node.config.read_text())),
              "2026_01_01.2")
    kubelet.wait_registered("nvidia.com/e810_vfio", timeout=10)

    logs = check_log_lines(d)
    # The flag nicplug cannot honour is accepted and said once, with what it does instead.
    assert logs.count("/var/log/sriovdp") == 1, logs
    assert "stderr" in logs
    assert not (node.base / "var").exists()

    # Kubelet gone: not ready, and probe says so; the daemon itself stays alive.
    kubelet.stop()
    (node.kubelet_dir / "device-plugins" / "kubelet.sock").unlink(missing_ok=True)
    status, body = wait_for(
        lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(f"http://127.0.0.1:{port}/readyz")), 10, what="/readyz to say not ready")
    assert "kubelet is not running" in body, body
    bad = probe(node)
    assert bad.returncode == 1, bad.stdout
    assert "not ready" in bad.stdout, bad.stdout
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert d.alive()


def test_probe_fails_for_a_pool_not_registered_with_the_running_kubelet(node, kubelet, daemons):
    d = daemons.start(node, args=[], env=redirected(node, NICPLUG_CONFIG=str(node.config)))
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert probe(node).returncode == 0
    # Registration refused from now on, and kubelet restarts: every socket is deleted, the
    # daemon serves again but cannot register.
    kubelet.reject = 10**6
    kubelet.restart()
    wait_for(lambda: all((node.plugin_dir / s).exists() for s in
                         [f"nicplug-{p.replace('/', '-')}.sock" for p in SAMPLE_POOLS]), 10,
             what="sockets served again")
    res = wait_for(lambda: (lambda r: r if r.returncode == 1 else None)(probe(node)), 10,
                   what="probe to fail")
    assert "not registered with the running kubelet" in res.stdout, res.stdout
    assert d.alive()
