"""A device is never in two places (issue 12 §2, issue 11 §3).

- A reload that moves a device to another pool while kubelet holds it under the old name does
  not advertise it Healthy under the new one until kubelet releases it: kubelet's word comes
  from its pod resources API (the stand-in's `serve_pod_resources`), and, while that is down,
  from the daemon's own record (which survives a SIGKILL).
- An allocated device that disappears stays listed, Unhealthy, until released.
- A seeded random walk over reloads, kubelet restarts, SIGKILLs, pod resources outages and VF
  removal/re-creation never hands one device to two pods, never advertises one device Healthy
  in two pools, nor under a resource other than the one it is held under, and never gives one
  exclusive node or counters mount to two devices.
"""

import json
import os
import random
import signal
import time

import grpc
import pytest

from harness import PF0_VFS, PF1_VFS, SAMPLE_POOLS, VF_POOL, VFIO_POOL, wait_for
from kubelet import Ledger, health_of, ids_of

VFIO = "0000:5e:01.0"
NEW_VFIO_POOL = "nvidia.com/e810_vfio"


def renamed_vfio(node):
    config = json.loads(node.config.read_text())
    for r in config["resourceList"]:
        if r["resourceName"] == "intel_vfio":
            r["resourceName"] = "e810_vfio"
    return config


def healthy(kubelet, resource, dev):
    devs = kubelet.devices(resource) or ()
    return health_of(devs).get(dev) == "Healthy"


def test_reload_moving_a_held_device_waits_for_its_release(node, kubelet, daemons):
    kubelet.serve_pod_resources()
    daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    kubelet.allocate(VFIO_POOL, [[VFIO]])

    node.write_config(renamed_vfio(node))
    reg = kubelet.wait_registered(NEW_VFIO_POOL, timeout=10)
    assert health_of(reg.conn.messages[0][1]) == {VFIO: "Unhealthy"}, \
        "a device kubelet holds under another name is never offered, not even once"
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(NEW_VFIO_POOL, [[VFIO]])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    mark = kubelet.mark(NEW_VFIO_POOL)
    kubelet.release([VFIO])
    kubelet.wait_devices(NEW_VFIO_POOL, lambda d: health_of(d) == {VFIO: "Healthy"},
                         timeout=10, after=mark)
    kubelet.allocate(NEW_VFIO_POOL, [[VFIO]])


def test_without_pod_resources_the_record_survives_a_sigkill(node, kubelet, daemons):
    d = daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    kubelet.allocate(VFIO_POOL, [[VFIO]])
    d.kill()
    node.write_config(renamed_vfio(node))
    d.start()
    reg = kubelet.wait_registered(NEW_VFIO_POOL, timeout=15)
    assert health_of(reg.conn.messages[0][1]) == {VFIO: "Unhealthy"}
    time.sleep(1.5)
    assert not healthy(kubelet, NEW_VFIO_POOL, VFIO), "released without kubelet saying so"

    # A kubelet restart empties device-plugins/: the record is written again.
    kubelet.restart()
    kubelet.wait_all_registered([VF_POOL, NEW_VFIO_POOL], timeout=15, after=kubelet.restarts[-1])
    d.kill()
    d.start()
    reg = kubelet.wait_registered(NEW_VFIO_POOL, timeout=15, after=time.monotonic())
    assert health_of(reg.conn.messages[0][1]) == {VFIO: "Unhealthy"}

    # Kubelet answers at last: the pod is gone.
    mark = kubelet.mark(NEW_VFIO_POOL)
    kubelet.release()
    kubelet.serve_pod_resources()
    kubelet.wait_devices(NEW_VFIO_POOL, lambda d: health_of(d) == {VFIO: "Healthy"},
                         timeout=15, after=mark)


def test_allocated_device_that_vanishes_stays_listed_unhealthy(node, kubelet, daemons):
    kubelet.serve_pod_resources()
    daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    held, free = PF0_VFS[0], PF0_VFS[1]
    kubelet.allocate(VF_POOL, [[held]])

    mark = kubelet.mark(VF_POOL)
    node.remove_function(held)
    node.remove_function(free)
    _, devs = kubelet.wait_devices(VF_POOL, lambda d: free not in ids_of(d), timeout=10,
                                   after=mark)
    assert health_of(devs).get(held) == "Unhealthy", \
        "kubelet must see the held device fail, not vanish (it would report it Healthy)"
    time.sleep(1.5)
    assert health_of(kubelet.devices(VF_POOL)).get(held) == "Unhealthy"

    mark = kubelet.mark(VF_POOL)
    kubelet.release([held])
    kubelet.wait_devices(VF_POOL, lambda d: held not in ids_of(d), timeout=10, after=mark)


# --------------------------------------------------------------------------- random walk

VFS = PF0_VFS + PF1_VFS


def config_variant(base, rng):
    """The sample config with the VFs spread over pools another way: renamed, split by
    address, reordered. Every variant is valid."""
    config = json.loads(json.dumps(base))
    vf = config["resourceList"][0]
    kind = rng.choice(["base", "rename", "split", "split_reordered", "narrow"])
    if kind == "rename":
        vf["resourceName"] = rng.choice(["cx6dx_vf2", "cx6dx_vf3"])
    elif kind in ("split", "split_reordered"):
        some = sorted(rng.sample(VFS, rng.randint(1, len(VFS) - 1)))
        extra = {"resourceName": "cx6dx_vfa", "resourcePrefix": "nvidia.com",
                 "selectors": {"pciAddresses": some, "isRdma": True}}
        # First match wins: before the general pool it takes `some`, after it nothing.
        config["resourceList"].insert(0 if kind == "split" else 1, extra)
    elif kind == "narrow":
        vf["selectors"] = {"pciAddresses": sorted(rng.sample(VFS, rng.randint(1, len(VFS)))),
                           "isRdma": True}
    return kind, config


def test_random_walk_never_two_places(node, kubelet, daemons):
    seed = int(os.environ.get("NICPLUG_WALK_SEED", random.randrange(1 << 30)))
    steps = int(os.environ.get("NICPLUG_WALK_STEPS", "40"))
    print(f"\nrandom walk: NICPLUG_WALK_SEED={seed} NICPLUG_WALK_STEPS={steps}")
    rng = random.Random(seed)
    base = json.loads(node.config.read_text())
    kubelet.serve_pod_resources()
    d = daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    healthy_at_start = sorted(i for i in VFS if healthy(kubelet, VF_POOL, i))
    ledger = Ledger()
    removed = {}  # bdf -> (dir, virtfn index)
    allocations = 0

    def settle():
        # Every registered pool has sent its list, and nothing new came for a moment.
        time.sleep(0.4)
        last = None
        for _ in range(50):
            with kubelet.cond:
                now = {r: len(c.messages) for r, c in kubelet.current.items()}
            if now == last:
                return
            last = now
            time.sleep(0.3)

    def check(step):
        # Devices held by pods, by resource; each device by one pod only (checked on allocate).
        held_under = {}
        for _, _, _, resource, ids in kubelet.holding():
            for i in ids:
                held_under[i] = resource
        healthy_in = {}
        with kubelet.cond:
            # A pool whose stream ended (removed from the config) offers nothing: kubelet
            # marks all its devices unhealthy.
            for resource, conn in kubelet.current.items():
                if not conn.stream_open:
                    continue
                for dev in conn.latest() or ():
                    if dev.health == "Healthy":
                        healthy_in.setdefault(dev.id, []).append(resource)
        twice = {i: rs for i, rs in healthy_in.items() if len(rs) > 1}
        assert not twice, f"step {step}: advertised Healthy by two pools: {twice}"
        elsewhere = {i: (rs[0], held_under[i]) for i, rs in healthy_in.items()
                     if i in held_under and held_under[i] != rs[0]}
        assert not elsewhere, \
            f"step {step}: Healthy in one pool while held under another: {elsewhere}"

    for step in range(steps):
        action = rng.choice(["reload", "reload", "allocate", "allocate", "allocate",
                             "release", "kubelet_restart", "sigkill", "podres_down",
                             "podres_up", "remove_vf", "restore_vf"])
        what = action
        if action == "reload":
            kind, config = config_variant(base, rng)
            node.write_config(config)
            what = f"reload ({kind})"
        elif action == "allocate":
            # What kubelet does: a Healthy device no pod holds, from a registered pool.
            held = {i for _, _, _, _, ids in kubelet.holding() for i in ids}
            offers = [(r, dev.id) for r in kubelet.resources()
                      if kubelet.conn(r).stream_open
                      for dev in kubelet.devices(r) or ()
                      if dev.health == "Healthy" and dev.id not in held]
            if offers:
                resource, dev = rng.choice(offers)
                try:
                    (car,) = kubelet.allocate(resource, [[dev]])
                except grpc.RpcError as e:
                    # A refusal is safe; a device moving under our feet may be refused.
                    assert e.code() in (grpc.StatusCode.FAILED_PRECONDITION,
                                        grpc.StatusCode.INVALID_ARGUMENT), e
                    what = f"allocate {dev} from {resource}: refused ({e.code().name})"
                else:
                    allocations += 1
                    assert dev not in held, f"step {step}: {dev} handed to a second pod"
                    if dev not in removed:
                        ledger.record(resource, [dev], car)
                    what = f"allocate {dev} from {resource}"
        elif action == "release":
            pods = kubelet.holding()
            if pods:
                _, _, _, _, ids = rng.choice(pods)
                kubelet.release(ids)
                what = f"release {ids}"
        elif action == "kubelet_restart":
            kubelet.restart()
        elif action == "sigkill":
            d.kill()
            d.start()
        elif action == "podres_down":
            kubelet.stop_pod_resources()
        elif action == "podres_up":
            kubelet.serve_pod_resources()
        elif action == "remove_vf":
            candidates = [v for v in VFS if v not in removed]
            vf = rng.choice(candidates)
            dev = node.pci_dir(vf)
            index = next((int(link.name[6:]) for link in (dev / "physfn").resolve()
                          .glob("virtfn*") if link.resolve() == dev), None)
            removed[vf] = (node.remove_function(vf), index)
            what = f"remove {vf}"
        elif action == "restore_vf" and removed:
            vf = rng.choice(sorted(removed))
            dev, index = removed.pop(vf)
            node.restore_function(vf, dev, index)
            what = f"restore {vf}"
        print(f"step {step}: {what}")
        if action in ("sigkill", "kubelet_restart"):
            wait_for(lambda: kubelet.resources(), 15, what="pools to register again")
        settle()
        check(step)

    # Kubelet answers and every pod ends: every device present is Healthy in one pool again.
    kubelet.serve_pod_resources()
    kubelet.release()
    for vf in sorted(removed):
        dev, index = removed.pop(vf)
        node.restore_function(vf, dev, index)
    node.write_config(base)
    wait_for(lambda: sorted(i for i in VFS if healthy(kubelet, VF_POOL, i))
             == healthy_at_start, 20, what="the VFs Healthy at start Healthy again once released")
    check("end")
    ledger.check_exclusive()
    print(f"random walk: {steps} steps, {allocations} allocations")
    assert d.alive()
    d.send_signal(signal.SIGTERM)


def dra_checkpoint(node, ids):
    """The checkpoint a nicplug DRA driver on this node would keep, one claim holding `ids`
    (the format `src/dra/checkpoint.rs` writes)."""
    d = node.kubelet_dir / "plugins" / "nicplug.io"
    d.mkdir(parents=True, exist_ok=True)
    uid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    claim = {"claim": {"namespace": "ns", "name": "dpdk", "uid": uid},
             "devices": [{"requests": ["nic"], "pool": "node1",
                          "device": "pci-" + i.replace(":", "-").replace(".", "-"), "id": i,
                          "cdi_device_ids": [f"nicplug.io/claim={uid}-x"]} for i in ids],
             "cdi_file": f"nicplug.io-claim_{uid}.json", "device_info_files": []}
    tmp = d / "checkpoint.json.tmp"
    tmp.write_text(json.dumps({"version": 1, "claims": {uid: claim} if ids else {}}))
    os.rename(tmp, d / "checkpoint.json")


def test_device_a_dra_claim_holds_is_never_allocated(node, kubelet, daemons):
    """Both front ends on one node by mistake: a device in the DRA driver's checkpoint is
    Unhealthy and Allocate refuses it, from the start and when a claim comes later; it is
    offered again once the claim is unprepared."""
    vf, other = PF0_VFS[0], PF0_VFS[1]
    dra_checkpoint(node, [vf])
    daemons.start(node, rescan_interval=60)
    reg = kubelet.wait_registered(VF_POOL, timeout=15)
    first = health_of(reg.conn.messages[0][1])
    assert first[vf] == "Unhealthy" and first[other] == "Healthy", \
        "a device a DRA claim holds is never offered, not even once"
    with pytest.raises(grpc.RpcError) as err:
        kubelet.allocate(VF_POOL, [[vf]])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DRA claim ns/dpdk" in err.value.details(), err.value.details()

    mark = kubelet.mark(VF_POOL)
    dra_checkpoint(node, [])
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d).get(vf) == "Healthy", timeout=10,
                         after=mark)
    mark = kubelet.mark(VF_POOL)
    dra_checkpoint(node, [other])
    kubelet.wait_devices(VF_POOL, lambda d: health_of(d).get(other) == "Unhealthy",
                         timeout=10, after=mark)
    with pytest.raises(grpc.RpcError):
        kubelet.allocate(VF_POOL, [[other]])
    kubelet.allocate(VF_POOL, [[vf]])
