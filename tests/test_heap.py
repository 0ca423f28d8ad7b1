"""zephyr.heap: with the thresholds fixed, freed tensors go back to the system (glibc)."""

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys, torch
    from zephyr.heap import limit_heap_growth
    if sys.argv[1] == "on":
        assert limit_heap_growth()
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    big = torch.ones(16 * 2**20, dtype=torch.uint8)
    del big  # glibc, by default: freeing it raises the mmap threshold to 16 MB
    base = rss_mb()
    blocks = [torch.ones(4 * 2**20, dtype=torch.uint8) for _ in range(100)]  # 400 MB
    keep = torch.ones(1024, dtype=torch.uint8)  # allocated last: pins the heap's top
    del blocks
    print(round(rss_mb() - base))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_tensors_are_returned_with_fixed_thresholds():
    grown = {}
    for mode in ("off", "on"):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        grown[mode] = int(out.stdout.strip().splitlines()[-1])
    assert grown["off"] > 300, grown  # the default: 400 MB of freed tensors stay resident
    assert grown["on"] < 50, grown
