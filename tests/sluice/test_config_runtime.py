"""sluice.config.return_large_frees: blocks of 1 MB or more get their own memory map (glibc), so freeing one returns
it to the system, even after glibc would have raised its own threshold."""

import ctypes
import platform

import numpy as np
import pytest

from sluice.config import return_large_frees


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_get_their_own_map_after_a_larger_free():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    assert return_large_frees() is True
    big = np.ones(30 << 18, np.float32)  # freeing a 30 MB block: glibc alone would now keep blocks < 30 MB in its heap
    del big
    maps = libc.mallinfo2().hblks
    block = np.ones(1 << 20, np.float32)  # 4 MB
    assert libc.mallinfo2().hblks == maps + 1
    del block
    assert libc.mallinfo2().hblks == maps
