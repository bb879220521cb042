"""The drop box's interface and claim protocol: `DropBox` over a store's primitives (local.py, s3.py implement them).

Layout under the drop box root (a folder, or `s3://bucket/prefix`):

    incoming/<name>                      submitted files, waiting (beside each, its options: <stem>.sluice.toml
                                         or .json, sluice/dropbox/manifest.py; filed with it below)
    processing/<run_id>/<name>           a claimed file's working copy while its run is in flight
    done/<run_id>/<name>                 processed files (their rows are in the warehouse)
    failed/<run_id>/<name>               files that could not be processed, with `<name>.error.json` beside them
    results/<dataset>/<run_id>/results.parquet   one row per input row, as landed in the warehouse
    claims/<claim_id>.json               the claim ledger: one entry per submitted object (key + ETag)

Exactly once. A file is claimed by *creating* its ledger entry `claims/<sha256(key, etag)>.json`, a write that
succeeds for exactly one writer: on S3 a conditional `PutObject(IfNoneMatch='*')` (412 for everyone else), in a
local folder a create under an exclusive `flock` on the ledger. Only the winner copies the object to
`processing/<run_id>/` and deletes it from `incoming/`. Every later change to the entry is a compare-and-swap
(S3 `IfMatch=<entry ETag>`, or the same `flock`), so a claim cannot be stolen silently:

    absent                        -> claimed (the creator owns the object)
    claimed, heartbeat fresh      -> someone is on it: skip
    claimed, heartbeat stale      -> its run crashed: take over, keeping the run id, so re-landing the warehouse
                                     replaces the crashed run's rows instead of adding new ones
    failed                        -> a resubmission of the same bytes may try again
    done                          -> already processed: a resubmission is moved to failed/ with the reason,
                                     never run twice

A run that is alive refreshes its heartbeat (`Heartbeat`), so a slow run is never mistaken for a crashed one.
Nothing is deleted that was not processed: an incoming object is deleted only after its bytes are copied to
`processing/` (and, on S3, only if its ETag still matches), a working copy only after it is copied to `done/`
or `failed/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

INCOMING, PROCESSING, DONE, FAILED, RESULTS, CLAIMS = "incoming", "processing", "done", "failed", "results", "claims"
DEFAULT_STALE_AFTER_S = 6 * 3600.0  # a run that has not refreshed its heartbeat for this long is presumed dead
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
# a data file's options travel beside it as NAME.sluice.toml / NAME.sluice.json (sluice/dropbox/manifest.py): never
# processed as files of their own
MANIFEST_SUFFIXES = (".sluice.toml", ".sluice.json")


@dataclass(frozen=True)
class DropObject:
    """One object in the drop box: its key relative to the root, and the store's version tag for its bytes."""

    key: str
    etag: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def claim_id(self) -> str:
        return hashlib.sha256(f"{self.key}\0{self.etag}".encode()).hexdigest()[:32]


@dataclass
class Claim:
    """A claimed object: this process owns it until `finish` (or until its heartbeat goes stale)."""

    obj: DropObject
    run_id: str
    entry: dict
    token: str  # the ledger entry's version: every update is a compare-and-swap against it
    recovered: bool = False  # taken over from a run that stopped heartbeating

    @property
    def working_key(self) -> str:
        return self.entry["working_key"]


@dataclass
class Skipped:
    obj: DropObject
    reason: str
    entry: dict = field(default_factory=dict)


class ClaimLost(RuntimeError):
    """The ledger entry changed under us: another run took the claim over (we were presumed dead)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class DropBox:
    """Claim, process and file away objects. Subclasses provide the storage primitives below."""

    url: str

    # --- storage primitives -----------------------------------------------------------------------------------
    def list(self, prefix: str) -> list[DropObject]:
        raise NotImplementedError

    def exists(self, key: str, etag: str | None = None) -> bool:
        raise NotImplementedError

    def upload(self, local: Path, key: str) -> None:
        raise NotImplementedError

    def download(self, key: str, local: Path) -> None:
        raise NotImplementedError

    def copy(self, src: str, dst: str, etag: str | None = None) -> None:
        """Copy `src` to `dst`; with `etag`, only if `src` still holds those bytes (else FileNotFoundError)."""
        raise NotImplementedError

    def delete(self, key: str, etag: str | None = None) -> bool:
        """Delete `key` (only if its etag still matches, when given); False if it was not there or changed."""
        raise NotImplementedError

    def create_entry(self, key: str, doc: dict) -> str | None:
        """Create a ledger entry if none exists; its version token, or None if it already existed."""
        raise NotImplementedError

    def replace_entry(self, key: str, doc: dict, token: str) -> str | None:
        """Replace a ledger entry if it is still at version `token`; the new token, or None if it changed."""
        raise NotImplementedError

    def read_entry(self, key: str) -> tuple[dict, str] | None:
        raise NotImplementedError

    def locate(self, key: str) -> str:
        """Where a key lives, as a user would type it (a path or an s3:// URL)."""
        raise NotImplementedError

    # --- the drop box -----------------------------------------------------------------------------------------
    def submit(self, local: str | Path, name: str | None = None) -> str:
        """Put a local file into incoming/ (atomically: it appears whole or not at all); returns its key."""
        local = Path(local)
        name = check_submitted_name(name or local.name)
        key = f"{INCOMING}/{name}"
        self.upload(local, key)
        return key

    def incoming(self) -> list[DropObject]:
        return [
            o for o in self.list(INCOMING + "/")
            if not o.name.startswith(".") and not o.name.endswith(_IGNORED_SUFFIXES + MANIFEST_SUFFIXES)
        ]

    def claim(self, obj: DropObject, run_id: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> Claim | Skipped:
        """Claim one incoming object for `run_id`. Exactly one caller wins, however many race."""
        ledger = f"{CLAIMS}/{obj.claim_id}.json"
        now = _now().isoformat()
        entry = {
            "claim_id": obj.claim_id, "key": obj.key, "etag": obj.etag, "size": obj.size, "state": "claimed",
            "run_id": run_id, "owner": _owner(), "claimed_at": now, "heartbeat_at": now, "attempts": 1,
            "working_key": f"{PROCESSING}/{run_id}/{obj.name}",
        }
        token = self.create_entry(ledger, entry)
        recovered = False
        if token is None:
            found = self.read_entry(ledger)
            if found is None:  # deleted between our create and read: only an operator does that
                return Skipped(obj, "claim ledger entry vanished; retry on the next pass")
            old, old_token = found
            takeover = self._takeover(old, stale_after_s)
            if takeover is None:
                return Skipped(obj, _skip_reason(old), old)
            if old["state"] == "failed":  # a resubmission of bytes that failed before: a fresh run
                entry = {**entry, "attempts": int(old.get("attempts", 1)) + 1, "previous_run_id": old["run_id"]}
            else:  # a crashed run: same run id and working copy, so its landing is replaced, not repeated
                entry = {**old, **takeover, "owner": _owner(), "heartbeat_at": now,
                         "attempts": int(old.get("attempts", 1)) + 1}
            token = self.replace_entry(ledger, entry, old_token)
            if token is None:
                return Skipped(obj, "another run took this claim at the same moment")
            recovered = old["state"] == "claimed"
        claim = Claim(obj, entry["run_id"], entry, token, recovered)
        # a pointer beside the working copy, so `recover_stale` finds this claim if the run dies
        self.put_json(f"{claim.working_key}.claim.json", {"claim_id": obj.claim_id, "run_id": claim.run_id})
        try:
            # the working copy: the run reads these bytes even if someone re-submits the same name meanwhile
            if not self.exists(claim.working_key):
                self.copy(obj.key, claim.working_key, etag=obj.etag)
        except FileNotFoundError:
            self._release(claim, "the object changed or vanished before it could be copied; it was not processed")
            self.delete(f"{claim.working_key}.claim.json")
            return Skipped(obj, "changed or vanished while being claimed")
        self.delete(obj.key, etag=obj.etag)
        return claim

    def recover_stale(self, stale_after_s: float = DEFAULT_STALE_AFTER_S, limit: int | None = None) -> list[Claim]:
        """Take over (at most `limit`) claims whose run stopped heartbeating (working copy in processing/).

        Take over only what you will process now: a taken-over claim starts a fresh heartbeat period.
        """
        claims: list[Claim] = []
        seen: set[str] = set()
        for o in self.list(PROCESSING + "/"):
            if limit is not None and len(claims) >= limit:
                break
            if not o.key.endswith(".claim.json"):
                continue
            found = self.read_entry(o.key)
            claim_id = (found or ({}, ""))[0].get("claim_id")
            if not claim_id or claim_id in seen:
                continue
            seen.add(claim_id)
            ledger = f"{CLAIMS}/{claim_id}.json"
            found = self.read_entry(ledger)
            if found is None:
                continue
            old, old_token = found
            if old["state"] != "claimed" or self._takeover(old, stale_after_s) is None:
                continue
            if not self.exists(old["working_key"]):  # died before copying: `claim` recovers it from incoming/
                continue
            now = _now().isoformat()
            entry = {**old, "owner": _owner(), "heartbeat_at": now, "attempts": int(old.get("attempts", 1)) + 1}
            token = self.replace_entry(ledger, entry, old_token)
            if token is None:
                continue
            obj = DropObject(old["key"], old["etag"], int(old.get("size", 0)))
            claims.append(Claim(obj, old["run_id"], entry, token, recovered=True))
        return claims

    def _takeover(self, old: dict, stale_after_s: float) -> dict | None:
        """What to change when an existing entry may be taken over; None when it must be left alone."""
        if old["state"] == "failed":
            return {"state": "claimed"}
        if old["state"] == "claimed":
            beat = datetime.fromisoformat(old.get("heartbeat_at") or old["claimed_at"])
            if (_now() - beat).total_seconds() > stale_after_s:
                return {"state": "claimed", "recovered_from": old["owner"]}
        return None

    def heartbeat(self, claim: Claim) -> None:
        """Refresh the claim's heartbeat; raises ClaimLost if another run took it over."""
        entry = {**claim.entry, "heartbeat_at": _now().isoformat()}
        token = self.replace_entry(f"{CLAIMS}/{claim.obj.claim_id}.json", entry, claim.token)
        if token is None:
            raise ClaimLost(f"{claim.obj.key}: claim {claim.obj.claim_id} was taken over by another run")
        claim.entry, claim.token = entry, token

    def put_results(self, claim: Claim, dataset: str, results: Path) -> str:
        key = f"{RESULTS}/{dataset}/{claim.run_id}/results.parquet"
        self.upload(results, key)
        return key

    def finish(self, claim: Claim, ok: bool, report: dict) -> str:
        """File the working copy under done/ or failed/ (with the JSON report beside it); returns its key."""
        state = "done" if ok else "failed"
        dest = f"{DONE if ok else FAILED}/{claim.run_id}/{claim.obj.name}"
        report = {"state": state, "source_key": claim.obj.key, "etag": claim.obj.etag, "run_id": claim.run_id,
                  "finished_at": _now().isoformat(), **report}
        if not ok:
            self.put_json(f"{dest}.error.json", report)
        self.copy(claim.working_key, dest)
        entry = {**claim.entry, "state": state, "finished_at": report["finished_at"], "outcome_key": dest,
                 **{k: report[k] for k in ("reason", "results_key", "dataset") if k in report}}
        token = self.replace_entry(f"{CLAIMS}/{claim.obj.claim_id}.json", entry, claim.token)
        if token is None:
            raise ClaimLost(f"{claim.obj.key}: claim {claim.obj.claim_id} was taken over before it finished")
        claim.entry, claim.token = entry, token
        if claim.recovered:  # its run may have died between copying the object and deleting it from incoming/
            self.delete(claim.obj.key, etag=claim.obj.etag)
        self.delete(claim.working_key)
        self.delete(f"{claim.working_key}.claim.json")
        return dest

    def reject(self, obj: DropObject, run_id: str, reason: str) -> str:
        """Move an incoming object straight to failed/ with a reason (a resubmission of processed bytes)."""
        dest = f"{FAILED}/{run_id}/{obj.name}"
        try:
            self.copy(obj.key, dest, etag=obj.etag)
        except FileNotFoundError:
            return ""
        self.put_json(f"{dest}.error.json", {"state": "failed", "source_key": obj.key, "etag": obj.etag,
                                             "run_id": run_id, "reason": reason, "finished_at": _now().isoformat()})
        self.delete(obj.key, etag=obj.etag)
        return dest

    def _release(self, claim: Claim, reason: str) -> None:
        entry = {**claim.entry, "state": "failed", "reason": reason, "finished_at": _now().isoformat()}
        self.replace_entry(f"{CLAIMS}/{claim.obj.claim_id}.json", entry, claim.token)

    def put_json(self, key: str, doc: dict) -> None:
        raise NotImplementedError


def check_submitted_name(name: str) -> str:
    """A submitted file's name: one plain file name that `incoming()` will list, or ValueError saying why not."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"{name!r}: not a plain file name; with '/', '..' or NUL it would land outside the drop "
                         "box's incoming/")
    if name.startswith(".") or name.endswith(_IGNORED_SUFFIXES):
        raise ValueError(f"{name!r}: hidden and partial-upload names ('.*', {', '.join(_IGNORED_SUFFIXES)}) are "
                         "never picked up; rename the file")
    if name.endswith(MANIFEST_SUFFIXES):
        raise ValueError(f"{name!r}: names ending {' or '.join(MANIFEST_SUFFIXES)} are a data file's options "
                         "(`sluice submit FILE --budget-usd ...` writes them); rename the file")
    if len(name.encode()) > 255:
        raise ValueError(f"{name[:40]!r}...: name too long ({len(name.encode())} bytes, at most 255)")
    return name


def _skip_reason(entry: dict) -> str:
    if entry["state"] == "done":
        return f"already processed by run {entry['run_id']} ({entry.get('outcome_key', 'done/')})"
    return f"claimed by run {entry['run_id']} ({entry.get('owner')}), heartbeat {entry.get('heartbeat_at')}"


class Heartbeat:
    """Refresh a claim's heartbeat every `every_s` seconds in a background thread while a run is alive."""

    def __init__(self, box: DropBox, claim: Claim, every_s: float) -> None:
        self.box, self.claim, self.every_s = box, claim, every_s
        self.lost: ClaimLost | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{claim.run_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.box.heartbeat(self.claim)
            except ClaimLost as exc:
                self.lost = exc
                return
            except Exception:  # a transient store error: try again on the next beat
                continue

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def dumps(doc: dict) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
