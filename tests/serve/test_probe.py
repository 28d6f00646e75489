"""`nicplug probe`, the DaemonSet's liveness check: exit 0 while every plugin socket answers,
1 when the daemon hangs."""

import signal
import subprocess

from harness import nicplug_bin


def probe(node):
    return subprocess.run([str(nicplug_bin()), "probe", "--kubelet-dir", str(node.kubelet_dir)],
                          capture_output=True, text=True, timeout=30)


def test_probe_follows_the_daemon(node, serving):
    ok = probe(node)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok    nicplug-") == 3
    serving.send_signal(signal.SIGSTOP)
    try:
        hung = probe(node)
    finally:
        serving.send_signal(signal.SIGCONT)
    assert hung.returncode == 1, hung.stdout
    assert "no answer within 2 s" in hung.stdout
