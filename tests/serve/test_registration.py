"""Contract points 1, 2 and 11: sockets, Register, options, ListAndWatch content, logs."""

import json
import time

import pytest

from harness import (
    DOWN_VF,
    PF_POOL,
    SAMPLE_POOLS,
    SAMPLE_VFS,
    VF_POOL,
    VFIO_POOL,
    socket_name,
)
from kubelet import Dev, ids_of


def test_registers_every_pool_with_serve_before_register(node, kubelet, serving):
    for resource in SAMPLE_POOLS:
        regs = kubelet.registrations(resource, ok=None)
        # The stand-in dials back inside Register: a plugin not yet serving fails there.
        assert regs and regs[0].ok, f"first Register of {resource} failed: {regs}"
        req = regs[0].request
        assert req.version == "v1beta1"
        assert req.endpoint == socket_name(resource)
        assert req.resource_name == resource
        assert req.options.pre_start_required is False
        assert req.options.get_preferred_allocation_available is True
        assert (node.plugin_dir / req.endpoint).is_socket()
        # Once registered, no more registrations while nothing changes.
        assert len(kubelet.registrations(resource, ok=None)) == 1


def test_plugin_options_over_the_socket(kubelet, serving):
    for resource in SAMPLE_POOLS:
        conn = kubelet.conn(resource)
        assert conn.options.pre_start_required is False
        assert conn.options.get_preferred_allocation_available is True
        again = kubelet.options(resource)
        assert again == conn.options


def test_list_and_watch_content(node, kubelet, serving):
    devs = kubelet.devices(VF_POOL)
    assert ids_of(devs) == SAMPLE_VFS, "IDs sorted, every VF of both PFs, broken 3b:02.1 skipped"
    # 3b:00.7's own netdev and RDMA port are down: a free VF's normal state, not a fault.
    expected = [Dev(v, "Healthy", (0,)) for v in SAMPLE_VFS]
    assert list(devs) == expected
    assert list(kubelet.devices(PF_POOL)) == [Dev("0000:af:00.0", "Healthy", (1,))]
    assert list(kubelet.devices(VFIO_POOL)) == [Dev("0000:5e:01.0", "Healthy", (0,))]

    # Same devices as the CLI's discovery puts in each pool.
    pools = {p["name"]: p["devices"] for p in node.discover()["pools"]}
    for resource in SAMPLE_POOLS:
        assert ids_of(kubelet.devices(resource)) == sorted(pools[resource])


def test_strict_rule_counts_the_vfs_own_link(node, kubelet, daemons):
    daemons.start(node, config=node.rule_config("strict"), rescan_interval=60)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    expected = [Dev(v, "Unhealthy" if v == DOWN_VF else "Healthy", (0,)) for v in SAMPLE_VFS]
    assert list(kubelet.devices(VF_POOL)) == expected


def test_no_topology_when_numa_unknown_or_excluded(node, kubelet, daemons):
    config = json.loads(node.config.read_text())
    for r in config["resourceList"]:
        if r["resourceName"] == "cx6dx_pf":
            r["excludeTopology"] = True
    node.write_config(config)
    (node.pci_dir("0000:5e:01.0") / "numa_node").write_text("-1\n")
    daemons.start(node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert list(kubelet.devices(PF_POOL)) == [Dev("0000:af:00.0", "Healthy", None)]
    assert list(kubelet.devices(VFIO_POOL)) == [Dev("0000:5e:01.0", "Healthy", None)]
    assert all(d.numa == (0,) for d in kubelet.devices(VF_POOL))


def test_no_new_message_without_change(kubelet, node, daemons):
    daemons.start(node, rescan_interval=1)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    time.sleep(3.5)  # three rescans that find nothing new
    for resource in SAMPLE_POOLS:
        conn = kubelet.conn(resource)
        assert len(conn.messages) == 1, (
            f"{resource}: {len(conn.messages)} ListAndWatch messages without any change")
        assert conn.stream_open


def test_empty_pool_is_served_and_default_prefix(node, kubelet, daemons):
    config = json.loads(node.config.read_text())
    config["resourceList"].append(
        {"resourceName": "nothing_here", "selectors": {"pciAddresses": ["0000:99:00.0"]}})
    node.write_config(config)
    daemons.start(node, resource_prefix="example.org")
    reg = kubelet.wait_registered("example.org/nothing_here", timeout=15)
    assert reg.request.endpoint == "nicplug-example.org-nothing_here.sock"
    assert reg.conn.messages[0][1] == ()
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)  # own resourcePrefix wins


def test_register_retries_until_kubelet_appears(node, daemons):
    from kubelet import Kubelet

    d = daemons.start(node)
    time.sleep(1.5)
    assert d.alive(), f"daemon exited without a kubelet:\n{d.stderr()}"
    k = Kubelet(node.kubelet_dir)
    try:
        t0 = k.start()
        regs = k.wait_all_registered(SAMPLE_POOLS, timeout=20)
        late = max(r.t for r in regs.values()) - t0
        print(f"\nregistered {late * 1000:.0f} ms after kubelet.sock appeared")
    finally:
        k.stop()


def test_register_retries_when_refused(kubelet, node, daemons):
    kubelet.reject = 5
    d = daemons.start(node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=30)
    assert d.alive()
    refused = [r for r in kubelet.registrations(ok=False)]
    assert len(refused) == 5


def test_logs_to_stderr_only(kubelet, serving):
    kubelet.allocate(VF_POOL, [["0000:3b:00.2"]])
    assert serving.stdout() == ""
    assert serving.stderr() != "", "--log info printed nothing"


def test_one_log_line_per_allocation(kubelet, serving):
    before = len(serving.stderr())
    ids = ["0000:3b:00.3", "0000:3b:01.4", "0000:3b:02.0"]
    for i in ids:
        kubelet.allocate(VF_POOL, [[i]])
    time.sleep(0.3)
    new = serving.stderr()[before:].splitlines()
    for i in ids:
        lines = [ln for ln in new if i in ln and "alloc" in ln.lower()]
        assert len(lines) == 1, f"log lines about allocating {i}: {lines}\nall new lines: {new}"


@pytest.mark.parametrize("resource", SAMPLE_POOLS)
def test_socket_names(node, serving, resource):
    assert (node.plugin_dir / socket_name(resource)).is_socket()


def test_split_roots(node, kubelet, daemons):
    """`--sysfs-root/--dev-root/--proc-root` instead of `--host-root`: same pools, same answers."""
    daemons.start(node, split_roots=True)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert ids_of(kubelet.devices(VF_POOL)) == SAMPLE_VFS
    (got,) = kubelet.allocate(VF_POOL, [["0000:3b:01.7"]])
    assert got == node.ref_allocate(VF_POOL, ["0000:3b:01.7"])
