"""`serve --cdi`: one spec file per resource in --cdi-dir, kept in step with the pools and
removed with them; Allocate answers `cdi_devices` naming devices of those files, with the same
envs as without CDI and no devices/mounts."""

import json
import os
import signal

import pytest

from harness import (
    PF_POOL,
    SAMPLE_POOLS,
    SAMPLE_VFS,
    VF_POOL,
    VFIO_POOL,
    socket_name,
    wait_for,
)
from test_reload import NEW_POOL, changed_config


def spec_file(resource):
    """`nvidia.com/cx6dx_vf` -> `nicplug-nvidia.com_cx6dx_vf.json` (the socket's scheme)."""
    return socket_name(resource)[: -len(".sock")] + ".json"


def cdi_dir(node):
    return node.base / "cdi"


def read_spec(node, resource):
    return json.loads((cdi_dir(node) / spec_file(resource)).read_text())


def spec_files(node):
    d = cdi_dir(node)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def resolve(node, name):
    """A qualified CDI name -> the device entry of the spec file of its kind, as a runtime
    would find it (any *.json in the directory with that kind)."""
    kind, _, dev = name.partition("=")
    found = []
    for p in cdi_dir(node).glob("*.json"):
        spec = json.loads(p.read_text())
        if spec["kind"] == kind:
            found += [d for d in spec["devices"] if d["name"] == dev]
    assert len(found) == 1, f"{name}: {len(found)} devices in {spec_files(node)}"
    return found[0]


@pytest.fixture
def cdi_serving(node, kubelet, daemons):
    d = daemons.start(node, rescan_interval=60, extra=["--cdi", "--cdi-dir", str(cdi_dir(node))])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    return d


def test_spec_files_match_the_static_command(node, cdi_serving):
    assert spec_files(node) == sorted(spec_file(r) for r in SAMPLE_POOLS)
    static = json.loads(node.cli("cdi").stdout)
    assert [read_spec(node, s["kind"]) for s in static] == static
    spec = read_spec(node, VF_POOL)
    assert spec["cdiVersion"] == "0.5.0"
    assert [d["name"] for d in spec["devices"]] == sorted(SAMPLE_VFS)
    for p in cdi_dir(node).iterdir():
        assert oct(p.stat().st_mode & 0o777) == "0o644", p


@pytest.mark.parametrize("resource,ids", [
    (VF_POOL, ["0000:3b:00.2"]),
    (VF_POOL, ["0000:3b:00.2", "0000:3b:01.2"]),
    (PF_POOL, ["0000:af:00.0"]),
    (VFIO_POOL, ["0000:5e:01.0"]),
])
def test_allocate_names_devices_of_the_written_specs(node, kubelet, cdi_serving, resource, ids):
    (got,) = kubelet.allocate(resource, [ids])
    ref = node.ref_allocate(resource, ids)
    assert got["envs"] == ref["envs"], "CDI mode must give the container the same env"
    assert got["annotations"] == ref["annotations"]
    assert got["devices"] == [] and got["mounts"] == []
    assert [c["name"] for c in got["cdi_devices"]] == [f"{resource}={i}" for i in ids]
    # What the runtime then applies: the union of the named devices' edits, which is exactly
    # what the container gets without CDI.
    nodes, mounts = [], []
    for c in got["cdi_devices"]:
        edits = resolve(node, c["name"])["containerEdits"]
        for n in edits.get("deviceNodes", []):
            if n["path"] not in [x["container_path"] for x in nodes]:
                nodes.append({"container_path": n["path"], "host_path": n["hostPath"],
                              "permissions": n["permissions"]})
        for m in edits.get("mounts", []):
            assert "ro" in m["options"] and m["type"] == "bind"
            mounts.append({"container_path": m["containerPath"], "host_path": m["hostPath"],
                           "read_only": True})
    assert nodes == ref["devices"]
    assert mounts == ref["mounts"]


def test_without_cdi_nothing_changes(node, kubelet, serving):
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:00.2"]])
    assert got["cdi_devices"] == []
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:00.2"])
    assert spec_files(node) == []


def test_spec_rewritten_when_devices_change(node, kubelet, cdi_serving):
    vf = "0000:3b:01.3"
    before = (cdi_dir(node) / spec_file(VF_POOL)).stat().st_ino
    node.unbind(vf)
    wait_for(lambda: vf not in [d["name"] for d in read_spec(node, VF_POOL)["devices"]], 5,
             what=f"{vf} to leave the spec")
    assert [d["name"] for d in read_spec(node, VF_POOL)["devices"]] == \
        sorted(v for v in SAMPLE_VFS if v != vf)
    assert (cdi_dir(node) / spec_file(VF_POOL)).stat().st_ino != before, "rewritten by rename"
    assert spec_files(node) == sorted(spec_file(r) for r in SAMPLE_POOLS), "no temp files"


def test_removed_resource_removes_its_spec(node, kubelet, cdi_serving):
    node.write_config(changed_config(node))
    kubelet.wait_registered(NEW_POOL, timeout=10)
    wait_for(lambda: spec_file(VFIO_POOL) not in spec_files(node), 10,
             what=f"{spec_file(VFIO_POOL)} to be removed")
    assert spec_files(node) == sorted(spec_file(r) for r in (VF_POOL, PF_POOL, NEW_POOL))
    (got,) = kubelet.allocate(NEW_POOL, [["0000:5e:01.0"]])
    assert resolve(node, got["cdi_devices"][0]["name"])["name"] == "0000:5e:01.0"


def test_specs_removed_on_sigterm(node, kubelet, cdi_serving):
    assert len(spec_files(node)) == 3
    code, clean = cdi_serving.stop(signal.SIGTERM, timeout=10)
    assert clean and code == 0, cdi_serving.stderr()
    assert spec_files(node) == []


def test_stale_specs_of_a_killed_run_are_replaced(node, kubelet, daemons):
    d = daemons.start(node, rescan_interval=60, extra=["--cdi", "--cdi-dir", str(cdi_dir(node))])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    d.kill()
    assert len(spec_files(node)) == 3, "SIGKILL leaves the files"
    # The next run serves fewer resources: the earlier run's file of the dropped one goes.
    node.write_config(changed_config(node))
    mark = {r: len(kubelet.registrations(r)) for r in SAMPLE_POOLS}
    d.start()
    kubelet.wait_registered(NEW_POOL, timeout=15)
    for r in (VF_POOL, PF_POOL):
        wait_for(lambda r=r: len(kubelet.registrations(r)) > mark[r], 15, what=f"{r} again")
    wait_for(lambda: spec_files(node) == sorted(spec_file(r) for r in (VF_POOL, PF_POOL,
                                                                        NEW_POOL)), 10,
             what="the stale intel_vfio spec to go")
    assert not [f for f in os.listdir(cdi_dir(node)) if f.startswith(".")]
