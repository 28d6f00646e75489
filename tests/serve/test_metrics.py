"""`serve --metrics-addr`: Prometheus metrics of the pools and of every allocated function,
labelled with the pod that holds it per kubelet's pod resources API (a grpcio stand-in here,
serving `List` from proto/podresources/v1/api.proto on the kubelet directory's socket).

Values are checked exactly against the fixture's files; the output is validated by the
OpenMetrics parser of the Python `prometheus_client`, and by `promtool check metrics` (the
classic text format) when promtool is installed.
"""

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import grpc
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_classic

from harness import SAMPLE_POOLS, VF_IBDEV, VF_NETDEV, VF_POOL, require, wait_for
from kubelet import Kubelet, PodResources

VF = "0000:3b:00.2"
HOLDER = {"namespace": "ns1", "pod": "pod-a", "container": "c1"}
NO_HOLDER = {"namespace": "", "pod": "", "container": ""}
NETDEV_STATS = {"rx_bytes": 123456789, "tx_bytes": 987654321, "rx_packets": 1001,
                "tx_packets": 2002, "rx_dropped": 3, "tx_dropped": 4}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, openmetrics=False):
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def samples(port):
    """{(sample name, frozenset(labels)): value} of one scrape (OpenMetrics, strictly parsed)."""
    ctype, text = scrape(port, openmetrics=True)
    assert ctype.startswith("application/openmetrics-text"), ctype
    assert text.endswith("# EOF\n")
    out = {}
    for fam in parse_openmetrics(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def value(got, name, **labels):
    return got.get((name, frozenset(labels.items())))


def named(got, name):
    return {dict(k[1]).get("device", ""): v for k, v in got.items() if k[0] == name}


def port_dir(node, bdf):
    (ib,) = list((node.pci_dir(bdf) / "infiniband").iterdir())
    return ib / "ports" / "1"


def files(d):
    return {f.name: int(f.read_text()) for f in sorted(d.iterdir())}


def write_netdev_stats(node, bdf, values):
    d = node.pci_dir(bdf) / "net" / VF_NETDEV[bdf] / "statistics"
    d.mkdir(exist_ok=True)
    for k, v in values.items():
        (d / k).write_text(f"{v}\n")


def promtool_check(text):
    """`promtool check metrics` on the classic format. Without promtool the test is skipped
    after its own checks (with CI=true: failed)."""
    if shutil.which("promtool") is None:
        require("`promtool` is not installed (apt-get install prometheus): the classic format "
                "was not checked by promtool")
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, f"promtool check metrics:\n{res.stdout}{res.stderr}"


@pytest.fixture
def metrics_port():
    return free_port()


@pytest.fixture
def pod_resources(node):
    pr = PodResources(node.kubelet_dir, [("ns1", "pod-a", "c1", VF_POOL, [VF])])
    yield pr
    pr.stop()


def start(daemons, node, kubelet, port, extra=()):
    d = daemons.start(node, rescan_interval=60,
                      extra=["--metrics-addr", f"127.0.0.1:{port}", *extra])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    wait_for(lambda: value(samples(port), "nicplug_registrations_total", resource=VF_POOL), 10,
             what="registrations to be counted")
    return d


def test_function_counters_labelled_with_the_holding_pod(node, kubelet, daemons, pod_resources,
                                                         metrics_port):
    write_netdev_stats(node, VF, NETDEV_STATS)
    start(daemons, node, kubelet, metrics_port)
    got = samples(metrics_port)

    assert value(got, "nicplug_pod_resources_up") == 1
    assert value(got, "nicplug_pool_devices", resource=VF_POOL) == 15
    assert value(got, "nicplug_pool_healthy_devices", resource=VF_POOL) == 15
    assert value(got, "nicplug_pool_allocated_devices", resource=VF_POOL) == 1
    for r in SAMPLE_POOLS:
        if r != VF_POOL:
            assert value(got, "nicplug_pool_allocated_devices", resource=r) == 0
        assert value(got, "nicplug_registrations_total", resource=r) == 1
        assert value(got, "nicplug_allocations_total", resource=r) == 0

    port = port_dir(node, VF)
    base = {"resource": VF_POOL, "device": VF, "ibdev": VF_IBDEV[VF], "port": "1", **HOLDER}
    for sub, name in [("hw_counters", "nicplug_rdma_hw_stat_total"),
                      ("counters", "nicplug_rdma_port_stat_total")]:
        want = files(port / sub)
        assert want, f"the fixture has no {sub}"
        have = {dict(k[1])["counter"]: v for k, v in got.items()
                if k[0] == name and dict(k[1]) == {**base, "counter": dict(k[1])["counter"]}}
        assert have == want, name
        assert set(named(got, name)) == {VF}, f"{name} for a function nobody holds"
    nd = {"resource": VF_POOL, "device": VF, "netdev": VF_NETDEV[VF], **HOLDER}
    for stat, v in NETDEV_STATS.items():
        assert value(got, f"nicplug_netdev_{stat}_total", **nd) == v, stat

    # Read at every scrape: a counter that moves shows its new value at once.
    (port / "hw_counters" / "out_of_buffer").write_text("777\n")
    got = samples(metrics_port)
    assert value(got, "nicplug_rdma_hw_stat_total", **base, counter="out_of_buffer") == 777

    # The classic format for everyone else, valid for promtool.
    ctype, text = scrape(metrics_port)
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    assert "# EOF" not in text
    classic = {(s.name, frozenset(s.labels.items())): s.value
               for f in parse_classic(text) for s in f.samples}
    assert value(classic, "nicplug_rdma_hw_stat_total", **base, counter="out_of_buffer") == 777
    promtool_check(text)


def test_without_pod_resources_allocations_since_start(node, kubelet, daemons, metrics_port):
    start(daemons, node, kubelet, metrics_port)
    got = samples(metrics_port)
    assert value(got, "nicplug_pod_resources_up") == 0
    assert value(got, "nicplug_pool_allocated_devices", resource=VF_POOL) == 0
    assert not named(got, "nicplug_rdma_hw_stat_total")

    kubelet.allocate(VF_POOL, [[VF]])
    with pytest.raises(grpc.RpcError):
        kubelet.allocate(VF_POOL, [["0000:99:00.0"]])
    got = samples(metrics_port)
    assert value(got, "nicplug_allocations_total", resource=VF_POOL) == 1
    assert value(got, "nicplug_allocation_errors_total", resource=VF_POOL) == 1
    assert value(got, "nicplug_pool_allocated_devices", resource=VF_POOL) == 1
    port = port_dir(node, VF)
    base = {"resource": VF_POOL, "device": VF, "ibdev": VF_IBDEV[VF], "port": "1", **NO_HOLDER}
    for counter, v in files(port / "hw_counters").items():
        assert value(got, "nicplug_rdma_hw_stat_total", **base, counter=counter) == v
    promtool_check(scrape(metrics_port)[1])


def test_pod_resources_down_keeps_the_last_holders_marked_stale(node, kubelet, daemons,
                                                                pod_resources, metrics_port):
    """Kubelet's pod resources API goes away: the devices keep the pods last seen holding them
    (and say the labels are stale) instead of losing their pods."""
    write_netdev_stats(node, VF, NETDEV_STATS)
    start(daemons, node, kubelet, metrics_port)
    got = samples(metrics_port)
    labels = {"resource": VF_POOL, "device": VF, "netdev": VF_NETDEV[VF], **HOLDER}
    assert value(got, "nicplug_pod_labels_stale") == 0
    fresh = {k for k in got if k[0] == "nicplug_netdev_rx_bytes_total"}
    assert {dict(k[1])["pod"] for k in fresh} == {HOLDER["pod"]}

    pod_resources.stop()
    got = samples(metrics_port)
    assert value(got, "nicplug_pod_resources_up") == 0
    assert value(got, "nicplug_pod_labels_stale") == 1
    assert value(got, "nicplug_pool_allocated_devices", resource=VF_POOL) == 1
    stale = {k for k in got if k[0] == "nicplug_netdev_rx_bytes_total"}
    assert stale == fresh, "the last known holders label the device while kubelet is silent"
    assert value(got, "nicplug_netdev_rx_bytes_total", **labels) is not None


def test_config_reload_counters(node, kubelet, daemons, metrics_port):
    good = json.loads(node.config.read_text())
    d = start(daemons, node, kubelet, metrics_port)
    got = samples(metrics_port)
    first = value(got, "nicplug_config_last_reload_success_timestamp_seconds")
    assert abs(first - time.time()) < 60
    assert not [k for k in got if k[0] == "nicplug_config_reloads_total"]

    node.write_config('{"resourceList": [')
    wait_for(lambda: value(samples(metrics_port), "nicplug_config_reloads_total",
                           result="failure") == 1, 10, what="a failed reload to be counted")
    got = samples(metrics_port)
    assert value(got, "nicplug_config_last_reload_success_timestamp_seconds") == first

    good["resourceList"] = good["resourceList"][:2]  # intel_vfio goes
    node.write_config(good)
    wait_for(lambda: value(samples(metrics_port), "nicplug_config_reloads_total",
                           result="success") == 1, 10, what="a good reload to be counted")
    got = samples(metrics_port)
    assert value(got, "nicplug_config_last_reload_success_timestamp_seconds") > first
    assert value(got, "nicplug_config_reloads_total", result="failure") == 1
    wait_for(lambda: value(samples(metrics_port), "nicplug_pool_devices",
                           resource=SAMPLE_POOLS[2]) is None, 10,
             what="the removed pool to leave the pool gauges")
    assert d.alive()


def test_metrics_addr_taken_is_an_error(node, daemons, metrics_port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", metrics_port))
        s.listen()
        d = daemons.start(node, extra=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
        code = d.proc.wait(15)
    assert code == 2
    assert f"metrics endpoint 127.0.0.1:{metrics_port}" in d.stderr()


def test_log_format_json(node, kubelet, daemons):
    d = daemons.start(node, extra=["--log-format", "json"])
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    d.stop()
    lines = [json.loads(line) for line in d.stderr().splitlines() if line.strip()]
    assert any(e["fields"].get("message") == "serving" for e in lines), lines
    assert all({"timestamp", "level", "fields", "target"} <= set(e) for e in lines)


def test_scrape_time_on_a_big_node(make_node, daemons):
    """Hand-read number, not an assertion: a `--generated 8x127` node (1,016 VFs in one pool)
    with every device held by a pod per the stand-in."""
    node = make_node(generated="8x127")
    kubelet = Kubelet(node.kubelet_dir)
    kubelet.start()
    try:
        port = free_port()
        d = daemons.start(node, rescan_interval=60, log="warn",
                          extra=["--metrics-addr", f"127.0.0.1:{port}"])
        kubelet.wait_registered(VF_POOL, timeout=60)
        ids = [dev.id for dev in kubelet.conn(VF_POOL).latest()]
        pods = [("bench", f"pod-{i}", "c", VF_POOL, [i_d]) for i, i_d in enumerate(ids)]
        pr = PodResources(node.kubelet_dir, pods)
        try:
            times = []
            for _ in range(5):
                t = time.monotonic()
                _, text = scrape(port)
                times.append(time.monotonic() - t)
            got = samples(port)
            assert value(got, "nicplug_pool_allocated_devices", resource=VF_POOL) == len(ids)
            hw = named(got, "nicplug_rdma_hw_stat_total")
            assert len(hw) == len(ids)
            print(f"\nscrape of {len(ids)} allocated functions ({len(text)} bytes, "
                  f"{text.count(chr(10))} lines): "
                  + ", ".join(f"{t * 1000:.0f} ms" for t in times))
        finally:
            pr.stop()
        assert d.alive()
    finally:
        kubelet.stop()
