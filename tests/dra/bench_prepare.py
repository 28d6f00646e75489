"""Hand-run benchmark: NodePrepareResources latency of `nicplug dra` on the sample node, as
kubelet's client sees it (grpcio over the Unix socket, kubelet's `:authority` form, through
the driver's HTTP/2 front). Each round prepares a fresh one-VF claim (CDI spec, device-info
file, checkpoint written) and unprepares it, cycling over the sample's VFs; only prepare is
timed. Not part of the test suite: tests never assert times.

Run: NICPLUG_BIN=$PWD/target/debug/nicplug target/venv/bin/python tests/dra/bench_prepare.py [N]
"""

import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dra import Driver, Kubelet, Node  # noqa: E402

VFS = [f"0000:3b:0{x}" for x in ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "1.0", "1.1",
                                   "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "2.0"]]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    node = Node.create()
    driver = Driver(node).start()
    try:
        k = Kubelet(driver)
        k.register()
        times = []
        for i in range(n):
            c = driver.write_claim(str(uuid.uuid4()), [("nic", VFS[i % len(VFS)])])
            t = time.perf_counter()
            r = k.prepare(c)[c["uid"]]
            times.append(time.perf_counter() - t)
            assert r.error == "", r.error
            assert k.unprepare(c)[c["uid"]].error == ""
        k.close()
        times.sort()
        ms = [t * 1000 for t in times]
        p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
        print(f"NodePrepareResources, {n} one-VF claims: p50 {p(0.50):.2f} ms, "
              f"p99 {p(0.99):.2f} ms, max {ms[-1]:.2f} ms, mean {statistics.mean(ms):.2f} ms")
    finally:
        driver.stop()
        node.destroy()


if __name__ == "__main__":
    main()
