"""Issue 7, faults: kubelet restarts during Allocate, the config replaced mid-read, sysfs changing
while it is scanned, an unwritable device-info directory, SIGKILL at random points. Each test is
bounded (a few seconds); together they take ~30 s."""

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from harness import (
    HEALTHY_VFS,
    PF0_VFS,
    SAMPLE_POOLS,
    VF_POOL,
    VFIO_POOL,
    fill,
    mounted_tmpfs,
    pb2,
    pb2_grpc,
    socket_name,
    wait_for,
)
from kubelet import CHECKPOINT, Ledger, car_to_dict, ids_of, plugin_channel

NEW_POOL = "nvidia.com/e810_vfio"


def allocate_direct(node, resource, ids, timeout=5):
    """Allocate straight on the plugin's socket (kubelet's registration table may be empty
    while it restarts)."""
    channel = plugin_channel(node.plugin_dir / socket_name(resource))
    try:
        stub = pb2_grpc.DevicePluginStub(channel)
        resp = stub.Allocate(pb2.AllocateRequest(container_requests=[
            pb2.ContainerAllocateRequest(devices_ids=list(ids))]), timeout=timeout)
        return [car_to_dict(c) for c in resp.container_responses]
    finally:
        channel.close()


def test_kubelet_restarts_during_allocates(node, kubelet, serving):
    """4 threads Allocate without pause while kubelet restarts 6 times: every call either gives
    exactly the CLI's answer or a gRPC error; the daemon lives and registers again."""
    vfs = HEALTHY_VFS[:4]
    refs = {vf: node.ref_allocate(VF_POOL, [vf]) for vf in vfs}
    stop = threading.Event()
    counts = {"ok": 0, "grpc_error": 0}
    wrong = []
    lock = threading.Lock()

    def worker(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            vf = rng.choice(vfs)
            try:
                (got,) = allocate_direct(node, VF_POOL, [vf])
            except grpc.RpcError as e:
                with lock:
                    counts["grpc_error"] += 1
                    if e.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                    grpc.StatusCode.FAILED_PRECONDITION):
                        wrong.append((vf, e.code(), e.details()))
                continue
            with lock:
                counts["ok"] += 1
                if got != refs[vf]:
                    wrong.append((vf, got))

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(worker, i) for i in range(4)]
        t0 = None
        for _ in range(6):
            t0 = kubelet.restart()
            time.sleep(0.4)
        stop.set()
        for f in futs:
            f.result(timeout=30)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15, after=t0)
    assert serving.alive(), serving.stderr()
    assert not wrong, f"wrong answers during restarts: {wrong[:5]}"
    assert counts["ok"] > 0
    (got,) = kubelet.allocate(VF_POOL, [[vfs[0]]])
    assert got == refs[vfs[0]]
    print(f"\nAllocates during 6 kubelet restarts: {counts['ok']} answered, "
          f"{counts['grpc_error']} gRPC errors, 0 wrong")


def _changed(config):
    """intel_vfio renamed e810_vfio (same selector, another resource)."""
    out = json.loads(json.dumps(config))
    for r in out["resourceList"]:
        if r["resourceName"] == "intel_vfio":
            r["resourceName"] = "e810_vfio"
    return out


def test_config_replaced_mid_read(node, kubelet, serving):
    """A half-written file (non-atomic write, left half-done for 1 s) keeps the last good config
    serving; then 30 rapid atomic swaps between two valid configs: the last one wins."""
    good = json.loads(node.config.read_text())
    other = _changed(good)
    text = json.dumps(other, indent=2)
    ref = node.ref_allocate(VF_POOL, ["0000:3b:00.2"])
    log_before = len(serving.stderr())
    with open(node.config, "w") as f:  # the partial write a careless editor makes
        f.write(text[: len(text) // 2])
        f.flush()
        wait_for(lambda: "config" in serving.stderr()[log_before:].lower(), 10,
                 what="the half-written config to be logged")
        time.sleep(0.5)
        (got,) = allocate_direct(node, VF_POOL, ["0000:3b:00.2"])
        assert got == ref
        assert (node.plugin_dir / socket_name(VFIO_POOL)).is_socket()
        assert serving.alive()
        f.write(text[len(text) // 2:])
    for i in range(30):
        node.write_config(good if i % 2 == 0 else other)
        time.sleep(random.uniform(0.0, 0.03))
    node.write_config(other)
    kubelet.wait_registered(NEW_POOL, timeout=15)
    wait_for(lambda: not (node.plugin_dir / socket_name(VFIO_POOL)).exists(), 10,
             what="the old pool's socket to go")
    time.sleep(1.0)  # let any late reload settle; the final file must still be what serves
    assert not (node.plugin_dir / socket_name(VFIO_POOL)).exists()
    (got,) = kubelet.allocate(NEW_POOL, [["0000:5e:01.0"]])
    assert got == node.ref_allocate(NEW_POOL, ["0000:5e:01.0"])
    assert serving.alive()


def test_sysfs_changes_while_scanned(node, kubelet, daemons):
    """A VF's link added and removed every few ms for 4 s while the daemon rescans every
    second (the rescans race the changes): no crash, and the final
    state is what kubelet sees, both with the VF gone and back."""
    d = daemons.start(node, rescan_interval=1)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    vf, index = PF0_VFS[7], 7
    rng = random.Random(7)
    end = time.monotonic() + 4
    dev = None
    flips = 0
    while time.monotonic() < end:
        dev = node.remove_function(vf)
        time.sleep(rng.uniform(0, 0.02))
        node.restore_function(vf, dev, virtfn_index=index)
        time.sleep(rng.uniform(0, 0.02))
        flips += 1
    assert d.alive(), d.stderr()
    # Messages from the flips are history: judge only the newest, once the daemon is calm.
    node.remove_function(vf)
    kubelet.wait_settled(VF_POOL, lambda devs: vf not in ids_of(devs), timeout=15)
    with pytest.raises(grpc.RpcError) as gone:
        kubelet.allocate(VF_POOL, [[vf]])
    assert gone.value.code() == grpc.StatusCode.INVALID_ARGUMENT, gone.value
    node.restore_function(vf, dev, virtfn_index=index)
    kubelet.wait_settled(VF_POOL, lambda devs: vf in ids_of(devs), timeout=15)
    (got,) = kubelet.allocate(VF_POOL, [[vf]])
    assert got == node.ref_allocate(VF_POOL, [vf])
    assert d.alive()
    print(f"\n{flips} remove/restore flips of {vf} during 1 s rescans")


def test_device_info_dir_unwritable(node, kubelet, daemons):
    """A regular file where the device-info directory should be: Allocate still answers
    correctly and a warning names the problem."""
    blocker = node.base / "devinfo-file"
    blocker.write_text("not a directory\n")
    d = daemons.start(node, rescan_interval=60, device_info_dir=blocker)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:00.2"]])
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:00.2"])
    wait_for(lambda: "device-info" in d.stderr(), 5, what="a device-info warning")
    assert "WARN" in d.stderr().upper()
    assert blocker.read_text() == "not a directory\n"
    assert d.alive()


def test_device_info_dir_full(node, kubelet, daemons):
    """The device-info directory on a full tmpfs: Allocate still answers correctly, a warning
    names the problem, and no partial or temporary file is left; with room again, the next
    Allocate writes the file whole."""
    info_dir = node.base / "devinfo-tmpfs"
    vf = "0000:3b:00.2"
    with mounted_tmpfs(info_dir, daemons):
        fill(info_dir / "filler")
        d = daemons.start(node, rescan_interval=60, device_info_dir=info_dir)
        kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
        (got,) = kubelet.allocate(VF_POOL, [[vf]])
        assert got == node.ref_allocate(VF_POOL, [vf])
        wait_for(lambda: "No space left on device" in d.stderr(), 5,
                 what="a warning about the full device-info directory")
        assert sorted(p.name for p in info_dir.iterdir()) == ["filler"]
        (info_dir / "filler").unlink()
        kubelet.allocate(VF_POOL, [[vf]])
        (written,) = info_dir.iterdir()
        info = json.loads(written.read_text())
        assert info["pci"]["pci-address"] == vf, info
        assert d.alive()


def test_sigkill_at_random_points(node, kubelet, daemons):
    """SIGKILL 5 times at random moments after start (before, during and after registration),
    then a clean start: exactly the plugin sockets of this run remain and answer, with the same
    device IDs as before the kills, and no device is handed out twice."""
    d = daemons.start(node, rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    before = {r: ids_of(kubelet.devices(r)) for r in SAMPLE_POOLS}
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    delays = []
    for _ in range(5):
        d.kill()
        delay = rng.uniform(0.0, 0.6)
        delays.append(round(delay, 3))
        d.start()
        time.sleep(delay)
    d.kill()
    t0 = time.monotonic()
    d.start()
    regs = kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15, after=t0)
    for r in SAMPLE_POOLS:
        kubelet.wait_devices(r, lambda devs, r=r: ids_of(devs) == before[r], timeout=10)
        assert ids_of(regs[r].conn.latest()) == before[r]
    expected = {"kubelet.sock", CHECKPOINT} | {socket_name(r) for r in SAMPLE_POOLS}
    left = {p.name for p in node.plugin_dir.iterdir()}
    assert left == expected, f"stale entries after SIGKILLs (seed {seed}): {left - expected}"
    for r in SAMPLE_POOLS:
        st = os.stat(node.plugin_dir / socket_name(r))
        assert st.st_mode & 0o777 == 0o600, f"{r}: mode {oct(st.st_mode)}"
        assert kubelet.options(r) is not None
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:00.2"]])
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:00.2"])
    # The restarted run hands out nothing twice: every device, each twice (same nodes again).
    ledger = Ledger()
    for _ in range(2):
        done = ledger.allocate_all(kubelet)
        assert sorted(done) == sorted(i for ids in before.values() for i in ids)
    ledger.check(kubelet)
    print(f"\nSIGKILL after {delays} s (seed {seed}); clean restart re-registered all pools")
