"""glibc's allocator as the server sets it: large blocks handed back when freed, not kept on the heap."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 64 blocks of 1 MiB, each with a small block allocated above it, freed while the small ones stay: a server's
# large request bodies or batches between the small objects that outlive them.
FREED_AMID_SMALL_BLOCKS = """
import sys
from starling_demo.host_memory import map_large_allocations

mapped = sys.argv[1] == "mapped" and map_large_allocations()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
large = bytearray(4 << 20)
del large  # glibc's default: the threshold for a block of its own rises to 4 MiB
before = rss()
pairs = [[bytearray(1 << 20), bytearray(4000)] for _ in range(64)]
for pair in pairs:
    del pair[0]
print(mapped, rss() - before)
"""


def kept_after_freeing(how: str, env: dict | None = None) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", FREED_AMID_SMALL_BLOCKS, how], cwd=ROOT, env=env or dict(os.environ),
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


def test_large_blocks_freed_amid_small_ones_are_handed_back():
    assert kept_after_freeing("default") == ("False", pytest.approx(64, abs=4))  # the heap keeps them
    mapped, kept = kept_after_freeing("mapped")
    assert mapped == "True" and kept < 2


def test_a_threshold_set_in_the_environment_is_left_alone():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}
    mapped, kept = kept_after_freeing("mapped", env)
    assert mapped == "False" and kept == pytest.approx(64, abs=4)
