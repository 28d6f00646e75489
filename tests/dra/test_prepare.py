"""NodePrepareResources/NodeUnprepareResources: the claim's CDI spec gives a container exactly
what the device plugin's Allocate gives for the same devices; idempotent; restarts and
unprepare leave nothing behind; bad opaque config and a device in two claims are refused."""

import json
import time
import uuid

import pytest

from dra import Driver, Kubelet, label, ordered, plain, spec_edits

VF = "0000:3b:00.2"
VF2 = "0000:3b:01.2"
POOL = "nvidia.com/cx6dx_vf"
API = "nicplug.io/v1alpha1"


def uid():
    return str(uuid.uuid4())


def prepared(answer, claim):
    r = answer[claim["uid"]]
    assert r.error == "", r.error
    return r


@pytest.mark.parametrize("service", ["v1.DRAPlugin", "v1beta1.DRAPlugin"])
def test_one_vf_gets_what_allocate_gives(node, driver, kubelet, service):
    c = driver.write_claim(uid(), [("nic", VF)])
    r = prepared(kubelet.prepare(c, service=service), c)
    assert len(r.devices) == 1
    d = r.devices[0]
    assert (list(d.request_names), d.pool_name, d.device_name) == (["nic"], "node1", label(VF))
    assert list(d.cdi_device_ids) == [f"nicplug.io/claim={c['uid']}-{label(VF)}"]
    spec = json.loads(driver.spec_path(c["uid"]).read_text())
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "nicplug.io/claim"
    assert ordered(spec_edits(spec, d.cdi_device_ids)) == plain(node.ref_allocate(POOL, [VF]))
    # The CNI device-info file, as the device plugin writes it.
    info = driver.devinfo / f"nvidia.com-cx6dx_vf-{VF}-device.json"
    assert json.loads(info.read_text())["pci"]["pci-address"] == VF


def test_two_vfs_compose_like_one_allocate(node, driver, kubelet):
    c = driver.write_claim(uid(), [("a", VF), ("b", VF2)])
    r = prepared(kubelet.prepare(c), c)
    ids = [i for d in r.devices for i in d.cdi_device_ids]
    spec = json.loads(driver.spec_path(c["uid"]).read_text())
    assert ordered(spec_edits(spec, ids)) == plain(node.ref_allocate(POOL, [VF, VF2]))
    # rdma_cm is shared: present once in the spec.
    paths = [n["path"] for dev in spec["devices"] for n in dev["containerEdits"]["deviceNodes"]]
    assert paths.count("/dev/infiniband/rdma_cm") == 1


def test_prepare_is_idempotent(driver, kubelet):
    c = driver.write_claim(uid(), [("nic", VF)])
    first = prepared(kubelet.prepare(c), c)
    spec = driver.spec_path(c["uid"])
    before = (spec.stat().st_ino, spec.stat().st_mtime_ns, driver.checkpoint.stat().st_mtime_ns)
    again = prepared(kubelet.prepare(c), c)
    assert again == first
    assert (spec.stat().st_ino, spec.stat().st_mtime_ns,
            driver.checkpoint.stat().st_mtime_ns) == before


def test_restart_then_unprepare_leaves_nothing(node, driver, kubelet):
    c = driver.write_claim(uid(), [("nic", VF), ("nic", VF2)])
    first = prepared(kubelet.prepare(c), c)
    kubelet.close()
    driver.stop()
    driver.start()
    k = Kubelet(driver)
    k.register()
    # The restarted driver knows the claim: same answer, and it still holds its devices.
    assert prepared(k.prepare(c), c) == first
    other = driver.write_claim(uid(), [("nic", VF)])
    assert "already prepared for claim" in k.prepare(other)[other["uid"]].error
    assert k.unprepare(c)[c["uid"]].error == ""
    assert [p.name for p in driver.cdi.iterdir()] == []
    assert [p.name for p in driver.devinfo.iterdir()] == []
    assert json.loads(driver.checkpoint.read_text())["claims"] == {}
    # Unknown (already unprepared) claims are fine.
    assert k.unprepare(c, other)[other["uid"]].error == ""
    k.close()


@pytest.mark.parametrize("params,field", [
    ({"apiVersion": API, "kind": "DpdkConfig", "ealArg": False}, "parameters.ealArg"),
    ({"apiVersion": API, "kind": "DpdkConfig", "countersMount": "no"}, "parameters.countersMount"),
    ({"apiVersion": API, "kind": "DpdkConfig", "rdmaDevices": ["uverbs", "verbs"]},
     "parameters.rdmaDevices[1]"),
    ({"apiVersion": "nicplug.io/v1", "kind": "DpdkConfig"}, "parameters.apiVersion"),
])
def test_bad_config_names_the_field(driver, kubelet, params, field):
    c = driver.write_claim(uid(), [("nic", VF)], config=[("Claim", [], params)])
    err = kubelet.prepare(c)[c["uid"]].error
    assert f"claim config[0].{field}:" in err and "fix:" in err, err
    assert not driver.spec_path(c["uid"]).exists()
    assert list(driver.devinfo.iterdir()) == []


def test_config_overrides_class_and_matches_pool_options(node, driver, kubelet):
    """Claim config over class config gives what a pool with the same `nicplug` options gives."""
    cls = {"apiVersion": API, "kind": "DpdkConfig", "rdmaDevices": ["uverbs", "rdma_cm"],
           "ealArgs": True}
    mine = {"apiVersion": API, "kind": "DpdkConfig", "rdmaDevices": ["uverbs"],
            "ealArgs": False}
    c = driver.write_claim(uid(), [("nic", VF)],
                           config=[("Claim", ["nic"], mine), ("Class", [], cls)])
    r = prepared(kubelet.prepare(c), c)
    config = json.loads(node.config.read_text())
    for res in config["resourceList"]:
        if res["resourceName"] == "cx6dx_vf":
            res.setdefault("nicplug", {}).update({"rdmaDevices": ["uverbs"], "ealArgs": False})
    path = node.root / "config-dpdk.json"
    node.write_config(config, path)
    spec = json.loads(driver.spec_path(c["uid"]).read_text())
    got = ordered(spec_edits(spec, r.devices[0].cdi_device_ids))
    assert got == plain(node.ref_allocate(POOL, [VF], config=path))
    assert [d["container_path"] for d in got["devices"]] == ["/dev/infiniband/uverbs2"]
    assert not any(k.startswith("NICPLUG_EAL_ARGS") for k in got["envs"])


def test_device_in_two_claims_refused(driver, kubelet):
    a = driver.write_claim(uid(), [("nic", VF)])
    b = driver.write_claim(uid(), [("nic", VF)])
    prepared(kubelet.prepare(a), a)
    err = kubelet.prepare(b)[b["uid"]].error
    assert "already prepared for claim" in err and a["uid"] in err, err
    assert not driver.spec_path(b["uid"]).exists()
    assert kubelet.unprepare(a)[a["uid"]].error == ""
    prepared(kubelet.prepare(b), b)


def test_unknown_device_and_missing_claim(driver, kubelet):
    c = driver.write_claim(uid(), [("nic", "0000:3b:02.1")])  # in no pool
    assert "in no pool" in kubelet.prepare(c)[c["uid"]].error
    ghost = {"namespace": "default", "name": "ghost", "uid": uid()}
    assert "ghost" in kubelet.prepare(ghost)[ghost["uid"]].error
    bad = {"namespace": "default", "name": "x", "uid": "../../etc"}
    assert "claim UID" in kubelet.prepare(bad)[bad["uid"]].error


def test_spec_removed_behind_our_back_is_written_again(node, driver, kubelet):
    c = driver.write_claim(uid(), [("nic", VF)])
    first = prepared(kubelet.prepare(c), c)
    body = driver.spec_path(c["uid"]).read_text()
    driver.spec_path(c["uid"]).unlink()
    assert prepared(kubelet.prepare(c), c) == first
    assert driver.spec_path(c["uid"]).read_text() == body


def test_unhealthy_device_refused_for_a_new_claim_only(node, driver, kubelet):
    """The device plugin's rule, from the same inventory: a VF whose PF lost its carrier is
    refused for a new claim, naming the verdict; a claim prepared before keeps its answer;
    the carrier back, the device is prepared again."""
    before = driver.write_claim(uid(), [("nic", "0000:3b:01.3")])  # another VF of VF2's PF
    answer = prepared(kubelet.prepare(before), before)
    net = node.sys / "class" / "net" / "ens1f1"  # their PF
    (net / "carrier").write_text("0\n")
    (net / "operstate").write_text("down\n")
    late = driver.write_claim(uid(), [("nic", VF2)], name="late")
    deadline = time.monotonic() + 20
    while True:  # the driver rescans every second (--rescan-interval 1)
        err = kubelet.prepare(late)[late["uid"]].error
        if err:
            break
        assert kubelet.unprepare(late)[late["uid"]].error == ""
        assert time.monotonic() < deadline, "the carrier loss was never seen"
        time.sleep(0.2)
    assert "unhealthy: PF ens1f1 no carrier" in err, err
    assert not driver.spec_path(late["uid"]).exists()
    assert prepared(kubelet.prepare(before), before) == answer
    assert kubelet.unprepare(before)[before["uid"]].error == ""
    (net / "carrier").write_text("1\n")
    (net / "operstate").write_text("up\n")
    deadline = time.monotonic() + 20
    while kubelet.prepare(late)[late["uid"]].error:
        assert time.monotonic() < deadline, "the carrier's return was never seen"
        time.sleep(0.2)
    assert driver.spec_path(late["uid"]).exists()


def test_device_the_device_plugin_holds_is_refused_until_released(driver, kubelet):
    """Both front ends on one node by mistake: a device in the device plugin's record
    (nicplug-holders.json) is refused to a claim, naming the holder, until it is released."""
    record = driver.device_plugins / "nicplug-holders.json"
    record.write_text(json.dumps({"version": 1, "claims": [{"resource": POOL, "id": VF}]}))
    c = driver.write_claim(uid(), [("nic", VF)])
    deadline = time.monotonic() + 20
    while True:  # the record is looked at every second
        err = kubelet.prepare(c)[c["uid"]].error
        if err:
            break
        assert kubelet.unprepare(c)[c["uid"]].error == ""
        assert time.monotonic() < deadline, "the device plugin's record was never read"
        time.sleep(0.2)
    assert f"held under {POOL} of the device plugin" in err, err
    other = driver.write_claim(uid(), [("nic", VF2)])
    prepared(kubelet.prepare(other), other)
    record.write_text(json.dumps({"version": 1, "claims": []}))
    deadline = time.monotonic() + 20
    while kubelet.prepare(c)[c["uid"]].error:
        assert time.monotonic() < deadline, "the release was never seen"
        time.sleep(0.2)
    assert driver.spec_path(c["uid"]).exists()
