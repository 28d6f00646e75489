"""`nicplug dra` against the API server stand-in: what the slices say, how they follow the host,
conflicts, uninstall, DeviceClasses and claims.

Latency figures: `pytest -s tests/dra_api/test_slices.py::test_republish_after_vf_appears`
prints the publish latency (sysfs change -> the stand-in receives the write), p50/p99 over 20.
"""

import json
import os
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import Node

NODE = "node-a"
SLICE = f"{NODE}-nicplug.io-0"
VF = "0000:3b:02.0"
VF_LABEL = "pci-0000-3b-02-0"


def discover_pools(nicplug):
    """The device plugin's pools of the node (exclusive ones), by resource name."""
    argv = nicplug.argv()[:-1] + ["discover", "-o", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return {p["name"]: p["devices"] for p in json.loads(out.stdout)["pools"]
            if "shared" not in p}


def label(bdf):
    return "pci-" + bdf.replace(":", "-").replace(".", "-")


def published(state, node=NODE):
    """name -> device over the node's current slices."""
    out = {}
    for s in state.slices.values():
        if s["spec"].get("nodeName") == node:
            for d in s["spec"].get("devices") or []:
                assert d["name"] not in out, f"device {d['name']} in two slices"
                out[d["name"]] = d
    return out


def attr(d, name):
    v = d["attributes"][name]
    [x] = v.values()
    return x


def writes(state, since=0.0):
    return [r for r in state.requests if r["method"] in ("POST", "PUT", "DELETE")
            and r["t"] >= since]


def test_slices_validate_and_carry_the_pools(nicplug, api):
    out = nicplug.run("publish", "--once", "--node-name", NODE)
    assert "17 devices published" in out.stdout
    # Every write passed the stand-in's schema check (422 otherwise).
    assert [r["code"] for r in writes(api.state)] == [201]
    [s] = api.state.slices.values()
    assert s["metadata"]["name"] == SLICE
    spec = s["spec"]
    assert spec["driver"] == "nicplug.io" and spec["nodeName"] == NODE
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    devs = published(api.state)
    pools = discover_pools(nicplug)
    want = {label(b): name for name, ids in pools.items() for b in ids}
    assert {n: attr(d, "nicplug.io/resourceName") for n, d in devs.items()} == want
    vf = devs["pci-0000-3b-00-2"]
    assert attr(vf, "resource.kubernetes.io/pciBusID") == "0000:3b:00.2"
    assert attr(vf, "resource.kubernetes.io/pcieRoot") == "pci0000:3a"
    assert attr(vf, "nicplug.io/pfAddress") == "0000:3b:00.0"
    assert attr(vf, "nicplug.io/vfIndex") == 0
    assert attr(vf, "nicplug.io/vendor") == "15b3" and attr(vf, "nicplug.io/deviceID") == "101e"
    assert attr(vf, "nicplug.io/rdma") is True and attr(vf, "nicplug.io/ibdev")
    assert attr(vf, "nicplug.io/netdev") and attr(vf, "nicplug.io/pfName")
    assert isinstance(attr(vf, "nicplug.io/numaNode"), int)
    # A function the device plugin does not pool (bad data, default route, ...) is absent.
    assert "pci-0000-3b-02-1" not in devs


def test_restart_keeps_slices_and_generation(nicplug, api):
    nicplug.run("publish", "--once", "--node-name", NODE)
    before = json.dumps(api.state.slices, sort_keys=True)
    n = len(api.state.requests)
    nicplug.run("publish", "--once", "--node-name", NODE)
    assert [r["method"] for r in api.state.requests[n:]] == ["GET"], "rewrote unchanged slices"
    assert json.dumps(api.state.slices, sort_keys=True) == before


def test_many_devices_split_into_slices_of_128(api):
    node = Node(generated="2x100")
    try:
        from conftest import Nicplug
        n = Nicplug(node, api)
        api.kubeconfig_path = api.kubeconfig(node.base / "kubeconfig")
        out = n.run("publish", "--once", "--node-name", NODE)
        count = int(out.stdout.split()[0])
        assert count > 128
        slices = sorted(api.state.slices.values(), key=lambda s: s["metadata"]["name"])
        assert len(slices) == (count + 127) // 128
        assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {len(slices)}
        assert all(len(s["spec"]["devices"]) <= 128 for s in slices)
        assert len(published(api.state)) == count
        assert all(r["code"] == 201 for r in writes(api.state))
    finally:
        node.destroy()


def wait_published(api, pred, timeout=20):
    return api.state.wait(lambda st: pred(published(st)), timeout)


def test_republish_after_vf_appears(nicplug, node, api):
    """A VF leaving and coming back (hot-unplug, replug) is republished from the sysfs
    events, no polling: the rescan period is an hour. Prints the latency from the sysfs change
    to the stand-in receiving the write, p50/p99 over 20 appearances."""
    p = nicplug.start("--node-name", NODE, "--rescan-interval", "3600")
    wait_published(api, lambda d: VF_LABEL in d)
    gen0 = api.state.slices[SLICE]["spec"]["pool"]["generation"]
    lat = []
    for _ in range(20):
        dev, index = node.remove_function(VF)
        wait_published(api, lambda d: VF_LABEL not in d)
        t0 = time.monotonic()
        node.restore_function(VF, dev, index)
        req = api.state.wait(lambda st: next(
            (r for r in writes(st, t0) if r["code"] in (200, 201)
             and any(d["name"] == VF_LABEL for d in r["body"]["spec"].get("devices") or [])),
            None), 20)
        lat.append((req["t"] - t0) * 1000)
    assert p.poll() is None, open(p.log_path).read()
    gen = api.state.slices[SLICE]["spec"]["pool"]["generation"]
    assert gen == gen0 + 40, "every change bumps the pool generation once"
    assert all(r["code"] in (200, 201) for r in writes(api.state)), "a write was refused"
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    print(f"\nResourceSlice publish latency after a VF appears (n=20): "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms")


def test_conflict_is_reread_and_retried(nicplug, node, api):
    p = nicplug.start("--node-name", NODE, "--rescan-interval", "3600")
    wait_published(api, lambda d: VF_LABEL in d)
    api.state.race_next_replace.add(SLICE)
    t0 = time.monotonic()
    node.remove_function(VF)
    wait_published(api, lambda d: VF_LABEL not in d)
    seq = [(r["method"], r["code"]) for r in api.state.requests if r["t"] >= t0
           and r["path"].endswith(SLICE)]
    assert seq[:3] == [("PUT", 409), ("GET", 200), ("PUT", 200)], seq
    assert p.poll() is None


def test_uninstall_deletes_only_this_nodes_slices(nicplug, api):
    nicplug.run("publish", "--once", "--node-name", NODE)
    other = json.loads(json.dumps(api.state.slices[SLICE]))
    other["metadata"]["name"] = "node-b-nicplug.io-0"
    other["spec"]["nodeName"] = other["spec"]["pool"]["name"] = "node-b"
    api.state.slices["node-b-nicplug.io-0"] = other
    out = nicplug.run("uninstall", "--node-name", NODE)
    assert "1 ResourceSlices of node node-a deleted" in out.stdout
    assert list(api.state.slices) == ["node-b-nicplug.io-0"]


def test_sigterm_keeps_slices_unless_asked(nicplug, api):
    p = nicplug.start("--node-name", NODE)
    wait_published(api, lambda d: len(d) == 17)
    assert nicplug.stop(p) == 0
    assert SLICE in api.state.slices, "a restart must not withdraw the devices"
    n = len(api.state.requests)
    t = time.monotonic()
    p = nicplug.start("--node-name", NODE, "--delete-on-exit")
    # It adopts the existing slices (a list, no write), then SIGTERM deletes them.
    api.state.wait(lambda st: len(st.requests) > n, 10)
    assert nicplug.stop(p) == 0, open(p.log_path).read()
    assert api.state.slices == {}
    assert [r["method"] for r in writes(api.state, t)] == ["DELETE"]


def post(api, obj):
    req = urllib.request.Request(api.url + "/apis/resource.k8s.io/v1/resourceslices",
                                 data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_stand_in_refuses_what_the_api_server_refuses(nicplug, api):
    """The stand-in is a check, not an echo: bodies the API server refuses get 422."""
    nicplug.run("publish", "--once", "--node-name", NODE)
    good = json.loads(json.dumps(api.state.slices[SLICE]))
    good["metadata"] = {"name": "x"}
    assert post(api, good) == 201
    for break_it in (
        lambda s: s["spec"]["devices"][0].update(bogus=1),
        lambda s: s["spec"]["devices"][0]["attributes"]["nicplug.io/netdev"].update(
            string="x" * 65),
        lambda s: s["spec"]["devices"][0].update(name="0000:3b:00.2"),
        lambda s: s["spec"]["devices"].extend(
            dict(d, name=f"d{i}") for i, d in enumerate(s["spec"]["devices"] * 8)),
        lambda s: s["spec"]["pool"].pop("generation"),
    ):
        bad = json.loads(json.dumps(good))
        bad["metadata"] = {"name": "y"}
        break_it(bad)
        assert post(api, bad) == 422, bad


def cel_select(expression, devices):
    """Names of the published devices the CEL expression selects, evaluated by cel-python
    with the `device` variable shaped as the scheduler gives it (attributes by domain)."""
    try:
        import celpy
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("cel-python missing (pip install cel-python)")
        pytest.skip("cel-python missing (pip install cel-python)")
    env = celpy.Environment()
    prog = env.program(env.compile(expression))
    out = set()
    for name, d in devices.items():
        attrs = {}
        for k, v in d["attributes"].items():
            dom, _, ident = k.rpartition("/")
            [val] = v.values()
            attrs.setdefault(dom or "nicplug.io", {})[ident] = val
        dev = celpy.json_to_cel({"driver": "nicplug.io", "attributes": attrs})
        if prog.evaluate({"device": dev}):
            out.add(name)
    return out


def test_classes_select_what_the_pools_hold(nicplug, api):
    nicplug.run("publish", "--once", "--node-name", NODE)
    devs = published(api.state)
    docs = list(yaml.safe_load_all(nicplug.run("classes").stdout))
    pools = discover_pools(nicplug)
    assert [d["spec"]["extendedResourceName"] for d in docs] == list(pools)
    for d in docs:
        [sel] = d["spec"]["selectors"]
        got = cel_select(sel["cel"]["expression"], devs)
        assert got == {label(b) for b in pools[d["spec"]["extendedResourceName"]]}, d
    # A different driver's device with the same attribute is not taken.
    [sel] = docs[0]["spec"]["selectors"]
    import celpy
    env = celpy.Environment()
    prog = env.program(env.compile(sel["cel"]["expression"]))
    other = celpy.json_to_cel({"driver": "other.io", "attributes": {"nicplug.io": {
        "resourceName": docs[0]["spec"]["extendedResourceName"]}}})
    assert not prog.evaluate({"device": other})


def claim(uid="uid-1"):
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": "c1", "namespace": "ns1", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {
            "deviceClassName": "x"}}]}},
        "status": {"allocation": {"devices": {
            "results": [
                {"request": "nic", "driver": "nicplug.io", "pool": NODE,
                 "device": "pci-0000-3b-00-2"},
                {"request": "gpu", "driver": "gpu.example.com", "pool": NODE, "device": "g0"},
                {"request": "nic", "driver": "nicplug.io", "pool": "node-b",
                 "device": "pci-0000-3b-00-3"},
            ],
            "config": [
                {"source": "FromClass", "opaque": {"driver": "nicplug.io", "parameters": {
                    "apiVersion": "nicplug.io/v1alpha1", "kind": "DpdkConfig",
                    "countersMount": True}}},
                {"source": "FromClaim", "requests": ["nic"], "opaque": {
                    "driver": "nicplug.io", "parameters": {
                        "apiVersion": "nicplug.io/v1alpha1", "kind": "DpdkConfig",
                        "ealArgs": False}}},
                {"source": "FromClaim", "opaque": {"driver": "gpu.example.com",
                                                   "parameters": {"x": 1}}},
            ]}}},
    }


def test_claim_allocation_for_this_driver_and_node(nicplug, api):
    import kubernetes_validate
    c = claim()
    kubernetes_validate.validate(c, "1.34", strict=True)
    api.state.claims[("ns1", "c1")] = c
    out = json.loads(nicplug.run("claim", "ns1", "c1", "uid-1", "--node-name", NODE).stdout)
    assert out["devices"] == [{"request": "nic", "pool": NODE, "device": "pci-0000-3b-00-2"}]
    assert [(x["source"], x["requests"], x["parameters"].get("ealArgs")) for x in out["config"]] \
        == [("Class", [], None), ("Claim", ["nic"], False)]
    assert [r["path"] for r in api.state.requests] == [
        "/apis/resource.k8s.io/v1/namespaces/ns1/resourceclaims/c1"]
    bad = nicplug.run("claim", "ns1", "c1", "uid-2", "--node-name", NODE, check=False)
    assert bad.returncode != 0 and "UID is uid-1" in bad.stderr
    gone = nicplug.run("claim", "ns1", "c2", "u", "--node-name", NODE, check=False)
    assert gone.returncode != 0 and "not found" in gone.stderr
    other = nicplug.run("claim", "ns1", "c1", "uid-1", "--node-name", "node-c", check=False)
    assert other.returncode != 0 and "no device of driver nicplug.io" in other.stderr



def test_rbac_allows_every_request_the_driver_makes(nicplug, api):
    """deploy/dra/rbac.yaml grants what the driver asks of the API server, nothing less."""
    from conftest import REPO
    api.state.claims[("ns1", "c1")] = claim()
    nicplug.run("publish", "--once", "--node-name", NODE)
    nicplug.run("claim", "ns1", "c1", "uid-1", "--node-name", NODE)
    nicplug.run("uninstall", "--node-name", NODE)
    [role] = [d for d in yaml.safe_load_all((REPO / "deploy/dra/rbac.yaml").read_text())
              if d["kind"] == "ClusterRole"]
    allowed = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}
    used = set()
    for r in api.state.requests:
        parts = r["path"].strip("/").split("/")  # apis/<group>/<version>/[namespaces/ns/]res[/name]
        if "namespaces" in parts:
            parts = parts[:3] + parts[5:]
        group, resource, named = parts[1], parts[3], len(parts) > 4
        v = verb.get(r["method"]) or ("get" if named else "list")
        used.add((group, resource, v))
    assert used == {("resource.k8s.io", "resourceslices", v)
                    for v in ("list", "create", "delete")} | {
        ("resource.k8s.io", "resourceclaims", "get")}
    assert used <= allowed


def write_config(node, config):
    tmp = node.config.with_name("config.json.tmp")
    tmp.write_text(config if isinstance(config, str) else json.dumps(config))
    os.rename(tmp, node.config)


def test_config_change_republishes_and_a_bad_one_keeps_the_last_good(nicplug, node, api):
    p = nicplug.start("--node-name", NODE, "--rescan-interval", "3600")
    wait_published(api, lambda d: "pci-0000-5e-01-0" in d)
    config = json.loads(node.config.read_text())
    config["resourceList"] = [r for r in config["resourceList"]
                              if r["resourceName"] != "intel_vfio"]
    write_config(node, config)
    devs = wait_published(api, lambda d: "pci-0000-5e-01-0" not in d and d)
    assert len(devs) == 16
    n = len(api.state.requests)
    write_config(node, '{"resourceList": [{"resourceName": 5}]}')
    # The rejected config is reported and changes nothing: no write follows.
    wait_for_log(p, "still serving the last good config")
    assert not [r for r in api.state.requests[n:] if r["method"] != "GET"]
    assert len(published(api.state)) == 16


def wait_for_log(p, text, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in open(p.log_path).read():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{open(p.log_path).read()}")


def test_slices_changed_by_others_are_repaired(nicplug, api):
    p = nicplug.start("--node-name", NODE, "--rescan-interval", "1", "--resync-interval", "1")
    wait_published(api, lambda d: len(d) == 17)
    with api.state.lock:
        del api.state.slices[SLICE]
    wait_published(api, lambda d: len(d) == 17)
    assert p.poll() is None
    assert all(r["code"] in (200, 201) for r in writes(api.state))


def test_kubelet_plugin_publishes_slices_from_the_same_inventory(nicplug, node, api):
    """`dra kubelet --publish-slices` (the DaemonSet's command): one process registers with
    kubelet and keeps the slices current from the inventory its prepare serves from."""
    base = node.base
    p = nicplug.start("--node-name", NODE, "--publish-slices", "--rescan-interval", "3600",
                      "--plugins-registry", base / "registry", "--plugins-dir",
                      base / "plugins", "--cdi-dir", base / "cdi", "--device-info-dir",
                      base / "devinfo", "--claims-from-dir", base / "claims",
                      command="kubelet")
    wait_published(api, lambda d: VF_LABEL in d)
    deadline = time.monotonic() + 20
    while not (base / "registry" / "nicplug.io-reg.sock").exists():
        assert p.poll() is None, open(p.log_path).read()
        assert time.monotonic() < deadline, "the registration socket never appeared"
        time.sleep(0.05)
    assert set(published(api.state)) == {label(b) for ids in discover_pools(nicplug).values()
                                         for b in ids}
    node.remove_function(VF)
    wait_published(api, lambda d: VF_LABEL not in d)
    assert p.poll() is None, open(p.log_path).read()
    assert nicplug.stop(p) == 0, open(p.log_path).read()
    assert not (base / "registry" / "nicplug.io-reg.sock").exists()
    assert api.state.slices, "SIGTERM must leave the slices in place"


def test_driver_without_config_says_why(nicplug, node, api):
    env = nicplug.env()
    for cmd in (["publish", "--once"], ["kubelet", "--plugins-registry", node.base / "r",
                                        "--plugins-dir", node.base / "p"]):
        argv = [a for a in nicplug.argv(*cmd, "--node-name", NODE)
                if a not in ("--config", str(node.config))]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "no config: give --config FILE" in r.stderr, r.stderr
    assert not api.state.slices


def test_devices_the_device_plugin_holds_are_left_out_until_released(nicplug, api):
    """A device in the device plugin's record (nicplug-holders.json) is not offered to the
    scheduler; released, it is published again."""
    nicplug.device_plugins.mkdir(exist_ok=True)
    record = nicplug.device_plugins / "nicplug-holders.json"
    record.write_text(json.dumps(
        {"version": 1, "claims": [{"resource": "nvidia.com/cx6dx_vf", "id": VF}]}))
    out = nicplug.run("publish", "--once", "--node-name", NODE)
    assert "16 devices published" in out.stdout, out.stdout
    assert VF_LABEL not in published(api.state)
    p = nicplug.start("--node-name", NODE, "--rescan-interval", "3600")
    record.write_text(json.dumps({"version": 1, "claims": []}))
    wait_published(api, lambda d: VF_LABEL in d and len(d) == 17)
    record.write_text(json.dumps(
        {"version": 1, "claims": [{"resource": "nvidia.com/cx6dx_vf", "id": VF}]}))
    wait_published(api, lambda d: VF_LABEL not in d and len(d) == 16)
    assert p.poll() is None, open(p.log_path).read()
