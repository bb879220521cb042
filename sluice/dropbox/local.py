"""The embedded drop box: a local folder (default `data/drop/`), for one machine.

Ledger entries are created and replaced under an exclusive `flock` on `<root>/claims/.lock`: the kernel gives it
to one process (or thread: each call opens its own file description) at a time and releases it if the holder
dies, so a crash never leaves the drop box locked. A lock file is also the one thing a folder offers that S3's
conditional writes stand for; it is only as good as the filesystem's flock (local disks yes, most NFS mounts
no), which is why this store is for a single machine and S3 is for many. Files appear atomically: written to a
hidden temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from sluice.dropbox.base import CLAIMS, DropBox, DropObject, dumps

_MD5_CACHE: dict[tuple[str, int, int, int], str] = {}


def _md5(path: Path) -> str:
    """The file's MD5 (an S3 single-part ETag), cached by inode, size and mtime: listings repeat every pass."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _MD5_CACHE:
        h = hashlib.md5()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if len(_MD5_CACHE) > 10_000:
            _MD5_CACHE.clear()
        _MD5_CACHE[key] = h.hexdigest()
    return _MD5_CACHE[key]


class LocalDropBox(DropBox):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        (self.root / CLAIMS).mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"{key!r} is outside the drop box {self.root}")
        return path

    @contextlib.contextmanager
    def _locked(self):
        with open(self.root / CLAIMS / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_atomic(self, path: Path, data: bytes | None = None, src: Path | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        if src is not None:
            shutil.copyfile(src, tmp)
        else:
            tmp.write_bytes(data or b"")
        os.replace(tmp, path)

    def list(self, prefix: str) -> list[DropObject]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        out = []
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                try:
                    out.append(DropObject(p.relative_to(self.root).as_posix(), _md5(p), p.stat().st_size))
                except FileNotFoundError:  # claimed and moved by another process while we listed
                    continue
        return out

    def exists(self, key: str, etag: str | None = None) -> bool:
        p = self._path(key)
        try:
            return p.is_file() and (etag is None or _md5(p) == etag)
        except FileNotFoundError:
            return False

    def upload(self, local: Path, key: str) -> None:
        self._write_atomic(self._path(key), src=Path(local))

    def download(self, key: str, local: Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)

    def copy(self, src: str, dst: str, etag: str | None = None) -> None:
        s = self._path(src)
        if not s.is_file():
            raise FileNotFoundError(src)
        dst_path = self._path(dst)
        self._write_atomic(dst_path, src=s)
        if etag is not None and _md5(dst_path) != etag:  # replaced between listing and copying
            dst_path.unlink()
            raise FileNotFoundError(f"{src}: no longer holds the claimed bytes")

    def delete(self, key: str, etag: str | None = None) -> bool:
        if not self.exists(key, etag):
            return False
        self._path(key).unlink(missing_ok=True)
        return True

    def put_json(self, key: str, doc: dict) -> None:
        self._write_atomic(self._path(key), dumps(doc))

    def create_entry(self, key: str, doc: dict) -> str | None:
        p = self._path(key)
        data = dumps(doc)
        with self._locked():
            if p.exists():
                return None
            self._write_atomic(p, data)
        return hashlib.md5(data).hexdigest()

    def replace_entry(self, key: str, doc: dict, token: str) -> str | None:
        p = self._path(key)
        data = dumps(doc)
        with self._locked():
            if not p.is_file() or hashlib.md5(p.read_bytes()).hexdigest() != token:
                return None
            self._write_atomic(p, data)
        return hashlib.md5(data).hexdigest()

    def read_entry(self, key: str) -> tuple[dict, str] | None:
        p = self._path(key)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            return None
        return json.loads(data), hashlib.md5(data).hexdigest()

    def locate(self, key: str) -> str:
        return str(self.root / key) + ("/" if key.endswith("/") else "")
