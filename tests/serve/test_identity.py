"""Issue 12 §1 under `serve`: a resource's full name maps one to one to its socket, CDI spec and
variables. A config whose resources would share one is refused at start and on reload (the
daemon keeps its last good config); a valid name of any length is served."""

import json
import os
import time

from harness import SAMPLE_POOLS, VFIO_POOL, socket_name, wait_for

SUN_PATH_MAX = 107  # bytes of a socket path, without the NUL


def snapshot(kubelet):
    return ({r: kubelet.conn(r) for r in SAMPLE_POOLS},
            {r: len(kubelet.registrations(r)) for r in SAMPLE_POOLS})


def with_extra(node, *resources):
    config = json.loads(node.config.read_text())
    config["resourceList"].extend(resources)
    return config


def test_a_colliding_reload_keeps_the_last_good_config(node, kubelet, serving):
    conns, regs = snapshot(kubelet)
    # Valid on its own; its variables (PCIDEVICE_NVIDIA_COM_CX6DX_VF, ...) are cx6dx_vf's.
    clash = {"resourceName": "CX6DX_VF", "resourcePrefix": "nvidia.com",
             "selectors": {"pciAddresses": ["0000:5e:01.0"]}}
    log_before = len(serving.stderr())
    node.write_config(with_extra(node, clash))
    wait_for(lambda: "would share" in serving.stderr()[log_before:], 10,
             what="the colliding config to be refused")
    logged = serving.stderr()[log_before:]
    assert "nvidia.com/CX6DX_VF" in logged and "nvidia.com/cx6dx_vf" in logged, logged
    assert "still serving the last good config" in logged, logged
    time.sleep(1.0)
    assert kubelet.registrations("nvidia.com/CX6DX_VF") == []
    for r in SAMPLE_POOLS:
        assert (node.plugin_dir / socket_name(r)).is_socket(), f"{r} lost its socket"
        assert kubelet.conn(r) is conns[r] and conns[r].stream_open, f"{r} was disturbed"
        assert len(kubelet.registrations(r)) == regs[r]
    # The vfio function stayed where it was.
    assert [d.id for d in kubelet.conn(VFIO_POOL).latest()] == ["0000:5e:01.0"]


def test_a_colliding_config_is_refused_at_start(node, daemons):
    node.write_config(with_extra(
        node,
        {"resourceName": "c", "resourcePrefix": "a-b", "selectors": {"vendors": ["15b3"]}},
        {"resourceName": "b-c", "resourcePrefix": "a", "selectors": {"vendors": ["8086"]}},
    ))
    d = daemons.start(node)
    wait_for(lambda: not d.alive(), 15, what="serve to refuse the config")
    assert d.proc.returncode != 0
    err = d.stderr()
    assert "a-b/c" in err and "a/b-c" in err and "fix:" in err, err
    assert not list(node.plugin_dir.glob("nicplug-*.sock")), "sockets left behind"


def test_a_name_too_long_for_a_plain_socket_path_is_served(node, kubelet, daemons):
    prefix = ".".join(["x" * 60, "y" * 60, "example.com"])
    name = "n" * 63
    resource = f"{prefix}/{name}"
    config = json.loads(node.config.read_text())
    # First in the list, so it takes the vfio function from intel_vfio.
    config["resourceList"].insert(0, {"resourceName": name, "resourcePrefix": prefix,
                                      "selectors": {"pciAddresses": ["0000:5e:01.0"]}})
    node.write_config(config)
    assert len(str(node.plugin_dir / socket_name(resource)).encode()) > SUN_PATH_MAX
    daemons.start(node)
    reg = kubelet.wait_registered(resource, timeout=15)
    endpoint = node.plugin_dir / reg.request.endpoint
    assert len(os.fsencode(endpoint)) <= SUN_PATH_MAX, endpoint
    assert endpoint.is_socket()
    assert "~" in reg.request.endpoint, reg.request.endpoint
    assert [d.id for d in reg.conn.latest()] == ["0000:5e:01.0"]
    (got,) = kubelet.allocate(resource, [["0000:5e:01.0"]])
    assert got == node.ref_allocate(resource, ["0000:5e:01.0"]), got
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
