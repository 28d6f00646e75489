"""Issue 12 §3: the files `serve` writes stay where they belong. One daemon per kubelet (a
second exits at once and leaves the first one's sockets and specs alone); what a killed daemon
left (sockets, temp files) is removed at start, so `nicplug probe` passes; a CDI spec removed
or changed by someone else is written again."""

import json
import os
import socket

from harness import SAMPLE_POOLS, VF_POOL, socket_name, wait_for
from test_cdi import cdi_dir, read_spec, spec_file, spec_files
from test_probe import probe


def start_cdi(daemons, node, **kw):
    return daemons.start(node, rescan_interval=60,
                         extra=["--cdi", "--cdi-dir", str(cdi_dir(node))], **kw)


def test_a_second_serve_exits_at_once_and_leaves_the_first_alone(node, kubelet, daemons):
    first = start_cdi(daemons, node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    specs = {p: (cdi_dir(node) / p).read_bytes() for p in spec_files(node)}
    assert len(specs) == 3, specs
    sockets = {r: os.stat(node.plugin_dir / socket_name(r)).st_ino for r in SAMPLE_POOLS}

    second = start_cdi(daemons, node)
    wait_for(lambda: not second.alive(), 10, what="the second serve to exit")
    assert second.proc.returncode != 0
    assert "another nicplug serve already runs" in second.stderr(), second.stderr()

    assert first.alive()
    assert {p: (cdi_dir(node) / p).read_bytes() for p in spec_files(node)} == specs
    for r in SAMPLE_POOLS:
        assert os.stat(node.plugin_dir / socket_name(r)).st_ino == sockets[r], r
    assert len(kubelet.registrations(VF_POOL)) == 1
    ok = probe(node)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_leftovers_of_a_killed_daemon_are_removed_at_start(node, kubelet, daemons, tmp_path):
    # A socket nobody listens on, as a SIGKILLed daemon leaves it (a pool since removed).
    stale = node.plugin_dir / "nicplug-nvidia.com_gone.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert stale.is_socket()
    # Temp files of interrupted writes: a file, a FIFO, a symlink to something precious.
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    for d in (cdi_dir(node), node.device_info_dir):
        d.mkdir(exist_ok=True)
        (d / ".nicplug.a1b2c3.tmp").write_text("half a spec")
        os.mkfifo(d / ".nicplug.fifo.tmp")
        os.symlink(precious, d / ".nicplug.link.tmp")
        (d / "someone-elses.tmp").write_text("not ours")

    start_cdi(daemons, node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    assert not stale.exists()
    ok = probe(node)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for d in (cdi_dir(node), node.device_info_dir):
        left = sorted(p.name for p in d.iterdir() if p.name.startswith("."))
        assert left == [], f"{d}: {left}"
        assert (d / "someone-elses.tmp").read_text() == "not ours"
    assert precious.read_text() == "keep me"


def test_a_spec_removed_or_changed_by_someone_else_is_written_again(node, kubelet, daemons):
    start_cdi(daemons, node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    path = cdi_dir(node) / spec_file(VF_POOL)
    good = path.read_bytes()
    assert read_spec(node, VF_POOL)["kind"] == VF_POOL

    path.unlink()
    wait_for(lambda: path.exists() and path.read_bytes() == good, 10,
             what="the removed spec to be written again")

    with open(path, "r+b") as f:  # edited in place
        f.write(b"{}")
    wait_for(lambda: path.read_bytes() == good, 10, what="the edited spec to be restored")

    tmp = path.with_name("replacement.tmp")
    tmp.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": VF_POOL, "devices": []}))
    os.rename(tmp, path)  # replaced whole
    wait_for(lambda: path.read_bytes() == good, 10, what="the replaced spec to be restored")
