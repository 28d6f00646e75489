"""Issue 7, faults: the CDI spec directory unwritable or full under `serve --cdi`. The daemon
stays up and registers; a pool whose spec cannot be written answers Allocate with devices and
mounts (exactly the non-CDI answer), the error is logged, and no partial or temporary file is
left (a truncated spec would make the runtime fail every container of that kind). Once the
directory is usable again, the next rebuild writes the specs and Allocate names them."""

import errno
import json
import os
import signal

import pytest

from harness import (PAGE, PF_POOL, SAMPLE_POOLS, VF_POOL, VFIO_POOL, fill, mounted_tmpfs,
                     wait_for)
from test_cdi import cdi_dir, read_spec, resolve, spec_file, spec_files

# One device per pool, allocated to compare the answer with what is on disk.
PROBE = {VF_POOL: "0000:3b:00.2", PF_POOL: "0000:af:00.0", VFIO_POOL: "0000:5e:01.0"}
FILLER = "filler"


def start_cdi(daemons, node):
    # Rescans every second: a spec that could not be written is retried at each one.
    return daemons.start(node, rescan_interval=1,
                         extra=["--cdi", "--cdi-dir", str(cdi_dir(node))])


def static_specs(node):
    """What `nicplug cdi` renders, by kind: the complete spec a written file must equal."""
    return {s["kind"]: s for s in json.loads(node.cli("cdi").stdout)}


def write_errors(daemon, resource):
    """The daemon's log lines saying `resource`'s spec could not be written."""
    return [line for line in daemon.stderr().splitlines()
            if "cannot write the CDI spec" in line and resource in line]


def check_consistent(node, kubelet, written, others=()):
    """The directory holds exactly the complete specs of `written` (besides `others`), and
    each pool's Allocate agrees with it: `cdi_devices` naming devices of its file when it has
    one, else exactly the answer without CDI."""
    assert spec_files(node) == sorted([spec_file(r) for r in written] + list(others))
    static = static_specs(node)
    for r in written:
        assert read_spec(node, r) == static[r], f"{r}: spec on disk is not the whole spec"
    for r in SAMPLE_POOLS:
        (got,) = kubelet.allocate(r, [[PROBE[r]]])
        ref = node.ref_allocate(r, [PROBE[r]])
        if r in written:
            assert got["envs"] == ref["envs"]
            assert got["devices"] == [] and got["mounts"] == []
            assert [c["name"] for c in got["cdi_devices"]] == [f"{r}={PROBE[r]}"]
            assert resolve(node, got["cdi_devices"][0]["name"])["name"] == PROBE[r]
        else:
            assert got == ref, f"{r}: no spec on disk, so the answer must be the non-CDI one"


def check_recovers(node, kubelet, daemon):
    """After the directory is usable again, with nothing else changing: the next rescan
    writes every spec, Allocate names them, and SIGTERM removes them."""
    for r in SAMPLE_POOLS:
        # Files land before the pools' views switch to CDI: wait for the answer itself.
        wait_for(lambda r=r: kubelet.allocate(r, [[PROBE[r]]])[0]["cdi_devices"], 10,
                 what=f"{r}'s Allocate to name a CDI device")
    check_consistent(node, kubelet, SAMPLE_POOLS)
    code, clean = daemon.stop(signal.SIGTERM)
    assert clean and code == 0, daemon.stderr()
    assert spec_files(node) == []


def test_cdi_dir_is_a_file(node, kubelet, daemons):
    """A regular file where the CDI directory should be (root writes through chmod, so a mode
    would not stop it): every pool falls back to devices and mounts, and each says why."""
    blocker = cdi_dir(node)
    blocker.write_text("not a directory\n")
    d = start_cdi(daemons, node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    for r in SAMPLE_POOLS:
        (got,) = kubelet.allocate(r, [[PROBE[r]]])
        assert got == node.ref_allocate(r, [PROBE[r]])
        wait_for(lambda r=r: write_errors(d, r), 5, what=f"an error about {r}'s spec")
        assert "ERROR" in write_errors(d, r)[0]
    assert blocker.read_text() == "not a directory\n"
    assert d.alive()
    blocker.unlink()
    check_recovers(node, kubelet, d)


@pytest.fixture
def tiny_tmpfs(node, daemons):
    """A 1 MiB tmpfs mounted at the CDI directory. Daemons are stopped before it is unmounted."""
    path = cdi_dir(node)
    with mounted_tmpfs(path, daemons):
        yield path


@pytest.mark.parametrize("room", ["none", "small specs"])
def test_cdi_dir_full(node, kubelet, daemons, tiny_tmpfs, room):
    """`none`: not a page free, every write fails. `small specs`: room for the PF and VFIO
    specs plus two pages, while the VF spec needs more: whatever the order of writes, the VF
    spec's write gets part-way and then ENOSPC; the small ones are written whole."""
    static = static_specs(node)
    pages = {r: -(-(len(json.dumps(static[r], indent=2)) + 1) // PAGE) for r in SAMPLE_POOLS}
    size = fill(tiny_tmpfs / FILLER)
    if room == "none":
        fallback = set(SAMPLE_POOLS)
    else:
        free = pages[PF_POOL] + pages[VFIO_POOL] + 2
        assert pages[VF_POOL] > free, f"the VF spec ({pages} pages) no longer overfills {free}"
        os.truncate(tiny_tmpfs / FILLER, size - free * PAGE)
        fallback = {VF_POOL}
    # The premise: beyond what was freed on purpose, not one page is left.
    with pytest.raises(OSError) as full:
        (tiny_tmpfs / "probe").write_bytes(bytes(PAGE * (1 if room == "none" else free + 1)))
    assert full.value.errno == errno.ENOSPC
    (tiny_tmpfs / "probe").unlink()

    d = start_cdi(daemons, node)
    kubelet.wait_all_registered(SAMPLE_POOLS, timeout=15)
    written = [r for r in SAMPLE_POOLS if r not in fallback]
    check_consistent(node, kubelet, written, others=[FILLER])
    for r in SAMPLE_POOLS:
        errors = write_errors(d, r)
        if r in fallback:
            assert errors and "ERROR" in errors[0], f"no error about {r}:\n{d.stderr()}"
            assert "No space left on device" in errors[0]
        else:
            assert not errors
    assert d.alive()

    (tiny_tmpfs / FILLER).unlink()
    check_recovers(node, kubelet, d)
