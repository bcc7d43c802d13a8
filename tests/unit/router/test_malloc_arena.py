"""`suanli serve` keeps one malloc arena: threads allocate from the main one (idle RSS)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# Threads allocate through glibc; secondary arenas are 64 MB-aligned anonymous heaps.
_CODE = """
import ctypes, sys, threading
if sys.argv[1] == "one":
    from suanli.router.ops.cli import one_malloc_arena
    one_malloc_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
def heaps():
    # An arena heap is one 64 MB-aligned anonymous reservation of exactly 64 MB (a read-write
    # head, the rest PROT_NONE); any other anonymous mapping that merely happens to be aligned
    # is not one.
    maps = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        maps.append((start, end, len(fields) == 5))
    found = 0
    for i, (start, end, anonymous) in enumerate(maps):
        if not anonymous or start % (64 << 20):
            continue
        if i + 1 < len(maps) and maps[i + 1][0] == end and maps[i + 1][2]:
            end = maps[i + 1][1]
        found += end - start == 64 << 20
    return found
def work():
    kept = [libc.malloc(1000) for _ in range(100)]
# Only what the threads add counts: a mapping an import made that looks like a heap by chance
# (about one run in fifteen) is there before they start.
before = heaps()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(heaps() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
@pytest.mark.parametrize(("mode", "one"), [("one", True), ("default", False)])
def test_threads_share_one_malloc_arena(mode: str, one: bool) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_ARENA_MAX from the caller
    out = subprocess.run([sys.executable, "-c", _CODE, mode], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    heaps = int(out.stdout)
    assert (heaps == 0) if one else (heaps > 0)
