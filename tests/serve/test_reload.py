"""Contract point 6: the config file is watched; valid changes rebuild pools, invalid ones are
logged and ignored, ConfigMap-style `..data` symlink swaps count as changes."""

import json
import os
import time

import pytest

from harness import PF_POOL, SAMPLE_POOLS, SAMPLE_VFS, VF_POOL, VFIO_POOL, socket_name, wait_for

NEW_POOL = "nvidia.com/e810_vfio"


def changed_config(node, base=None):
    """Same cx6dx_vf and cx6dx_pf entries, intel_vfio renamed to e810_vfio."""
    config = json.loads((base or node.config).read_text())
    config["resourceList"] = [r for r in config["resourceList"]
                              if r["resourceName"] != "intel_vfio"]
    config["resourceList"].append({
        "resourceName": "e810_vfio", "resourcePrefix": "nvidia.com",
        "selectors": {"vendors": ["8086"], "drivers": ["vfio-pci"]},
    })
    return config


def check_applied(node, kubelet, conns_before, regs_before, ref_config=None):
    """After `changed_config`: e810_vfio registered, intel_vfio gone, the rest untouched.
    `ref_config`: the config file the CLI reference reads (default: the node's)."""
    reg = kubelet.wait_registered(NEW_POOL, timeout=10)
    assert [d.id for d in reg.conn.latest()] == ["0000:5e:01.0"]
    wait_for(lambda: not (node.plugin_dir / socket_name(VFIO_POOL)).exists(), 10,
             what=f"{socket_name(VFIO_POOL)} to be removed")
    for r in (VF_POOL, PF_POOL):
        assert kubelet.conn(r) is conns_before[r], f"{r} re-registered though unchanged"
        assert conns_before[r].stream_open, f"{r}'s ListAndWatch stream was closed"
        assert len(kubelet.registrations(r)) == regs_before[r]
        assert (node.plugin_dir / socket_name(r)).is_socket()
    (got,) = kubelet.allocate(NEW_POOL, [["0000:5e:01.0"]])
    assert got == node.ref_allocate(NEW_POOL, ["0000:5e:01.0"], config=ref_config)
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:00.2"]])
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:00.2"], config=ref_config)
    old = kubelet.conn(VFIO_POOL)
    print(f"\nremoved pool's ListAndWatch stream: "
          f"{'still open' if old.stream_open else f'ended with {old.ended[1]}'}")


def snapshot(kubelet):
    return ({r: kubelet.conn(r) for r in SAMPLE_POOLS},
            {r: len(kubelet.registrations(r)) for r in SAMPLE_POOLS})


@pytest.mark.parametrize("how", ["rename", "in_place"])
def test_valid_change_adds_and_removes_pools(node, kubelet, serving, how):
    conns, regs = snapshot(kubelet)
    config = changed_config(node)
    if how == "rename":
        node.write_config(config)
    else:
        with open(node.config, "w") as f:
            f.write(json.dumps(config, indent=2))
    check_applied(node, kubelet, conns, regs)
    assert serving.alive()


@pytest.mark.parametrize("bad", [
    '{"resourceList": [ {"resourceName": "cx6dx_vf", ',  # syntax error
    json.dumps({"resourceList": [{"resourceName": "cx6dx_vf", "resourcePrefix": "nvidia.com",
                                  "selectors": {"vendorz": ["15b3"]}}]}),  # unknown key
], ids=["syntax", "unknown_key"])
def test_invalid_change_keeps_last_good_config(node, kubelet, serving, bad):
    kubelet.serve_pod_resources()
    conns, regs = snapshot(kubelet)
    good = node.base / "good-config.json"
    good.write_text(node.config.read_text())
    log_before = len(serving.stderr())
    node.write_config(bad)
    wait_for(lambda: "config" in serving.stderr()[log_before:].lower(), 10,
             what="the invalid config to be logged")
    time.sleep(1.0)
    for r in SAMPLE_POOLS:
        assert (node.plugin_dir / socket_name(r)).is_socket(), f"{r} lost its socket"
        assert kubelet.conn(r) is conns[r] and conns[r].stream_open, f"{r} was disturbed"
        assert len(kubelet.registrations(r)) == regs[r]
    (got,) = kubelet.allocate(VFIO_POOL, [["0000:5e:01.0"]])
    assert got == node.ref_allocate(VFIO_POOL, ["0000:5e:01.0"], config=good)
    print(f"\nlogged: {serving.stderr()[log_before:].strip()}")
    # The pod ends (a device held under intel_vfio is not offered under its new name before).
    kubelet.release()
    # The watcher survived: a valid change still applies.
    node.write_config(changed_config(node, good))
    check_applied(node, kubelet, conns, regs)


def configmap_dir(base, config, stamp):
    """kubelet's AtomicWriter layout: `..<stamp>/config.json`, `..data -> ..<stamp>`,
    `config.json -> ..data/config.json`."""
    d = base / f"..{stamp}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config, indent=2))
    return d


def swap_data(base, new_dir):
    tmp = base / "..data_tmp"
    os.symlink(new_dir.name, tmp)
    os.rename(tmp, base / "..data")


def test_configmap_symlink_swap(node, kubelet, daemons):
    cm = node.base / "configmap"
    cm.mkdir()
    first = configmap_dir(cm, json.loads(node.config.read_text()), "2024_01_01_00_00_00.1")
    os.symlink(first.name, cm / "..data")
    os.symlink("..data/config.json", cm / "config.json")
    d = daemons.start(node, config=cm / "config.json")
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    conns, regs = snapshot(kubelet)

    second = configmap_dir(cm, changed_config(node), "2024_01_01_00_05_00.2")
    swap_data(cm, second)
    for entry in first.iterdir():
        entry.unlink()
    first.rmdir()
    check_applied(node, kubelet, conns, regs, ref_config=cm / "config.json")

    # And once more: the watch follows the new target, not the deleted one.
    config = changed_config(node)
    config["resourceList"].append({
        "resourceName": "cx6dx_pf1", "resourcePrefix": "nvidia.com",
        "selectors": {"pciAddresses": ["0000:3b:02.0"]}})
    config["resourceList"][0]["selectors"]["pciAddresses"] = [
        f"0000:3b:0{i // 8}.{i % 8}" for i in range(2, 16)]  # 3b:00.2 .. 3b:01.7
    third = configmap_dir(cm, config, "2024_01_01_00_10_00.3")
    swap_data(cm, third)
    reg = kubelet.wait_registered("nvidia.com/cx6dx_pf1", timeout=10)
    assert [x.id for x in reg.conn.latest()] == ["0000:3b:02.0"]
    kubelet.wait_devices(VF_POOL, lambda devs: [x.id for x in devs] == SAMPLE_VFS[:-1],
                         timeout=10)
    assert d.alive()
