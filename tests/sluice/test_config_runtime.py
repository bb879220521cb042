"""sluice.config.return_large_frees: blocks of 1 MB or more get their own memory map (glibc), so freeing one returns
it to the system, even after glibc would have raised its own threshold.

The check runs in a fresh interpreter: in the test process, threads left by earlier tests (Prefect, numba, torch)
allocate and free maps of their own between two readings of glibc's count."""

import os
import platform
import subprocess
import sys

import pytest

from sluice.allocators import ALLOCATOR_ENV

CHECK = r"""
import ctypes
import numpy as np
from sluice.config import return_large_frees

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
assert return_large_frees() is True
big = np.ones(30 << 18, np.float32)  # freeing a 30 MB block: glibc alone would now keep blocks < 30 MB in its heap
del big
maps = libc.mallinfo2().hblks
block = np.ones(1 << 20, np.float32)  # 4 MB
with_block = libc.mallinfo2().hblks
del block
print(maps, with_block, libc.mallinfo2().hblks)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_get_their_own_map_after_a_larger_free():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    maps, with_block, after = map(int, done.stdout.split())
    assert with_block == maps + 1
    assert after == maps


def test_importing_sluice_sets_allocator_defaults_unless_the_user_did():
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    env["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"  # the user's choice
    show = "import os, sluice; print(os.environ['_RJEM_MALLOC_CONF']); print(os.environ['ARROW_DEFAULT_MEMORY_POOL'])"
    done = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [ALLOCATOR_ENV["_RJEM_MALLOC_CONF"], "jemalloc"]
