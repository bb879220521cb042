"""Allocator settings for the native libraries Sluice drives, read once when each library loads: so they are set
when the `sluice` package is imported, before anything imports polars or pyarrow (this module imports nothing else).

Both libraries keep memory they have freed for reuse, and at a million rows that is most of what a stage holds
after it is done (issue 19, `bench/results/scale.md`): after ingesting 1M rows (566 MB of Arrow buffers) the
process held 1050 MB; with these settings 727 MB.

    _RJEM_MALLOC_CONF          polars' jemalloc: return freed pages at once (default: after 10 s, so a stage's
                               garbage is still resident when the next stage peaks)
    ARROW_DEFAULT_MEMORY_POOL  pyarrow's pool: the C library's malloc (mimalloc's default keeps freed segments);
                               with `sluice.config.return_large_frees` large buffers are maps, unmapped when freed

A value the user set wins (`setdefault`). `give_back_freed` returns the C heap's free pages between stages."""

from __future__ import annotations

import os

ALLOCATOR_ENV = {
    "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def set_allocator_defaults() -> None:
    for name, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(name, value)


def glibc():
    """The process's C library when it is glibc (ctypes), else None: what `give_back_freed` and
    `sluice.config.return_large_frees` call into."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:  # pragma: no cover - no C library to load
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None


def give_back_freed() -> bool:
    """Return the C heap's free pages to the system (glibc's malloc_trim; False elsewhere). A stage that made
    Python objects by the million (the guards' lists, dicts and tuples) leaves heap pages free but resident: 90 MB
    after the near stage at 1M rows (issue 19). Cheap: call it when a stage is done."""
    trim = getattr(glibc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
