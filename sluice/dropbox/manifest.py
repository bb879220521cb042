"""Per-submission options: a manifest beside a dropped file, `NAME.parquet` + `NAME.sluice.toml` (or `.sluice.json`).

    # incoming/batch.sluice.toml, beside incoming/batch.parquet
    budget_usd = 5.0            # a hard cap on the run's spend: sluice run --budget-usd (sluice.stages.budget)
    deadline_h = 24             # hours until the answers are needed: batch APIs when it allows (sluice run --deadline-h)
    priority = 10               # higher first within a pass of the drop box (default 0), then the sooner deadline
    premium_share = 0.2         # or a share of rows for the premium tier (not with budget_usd)
    router = "routers/v3"       # a router folder on the worker (sluice run --router)
    min_quality = 0.9           # a floor for the quality estimate (sluice run --min-quality)
    schema = { type = "object", properties = { stars = { type = "integer" } } }   # or JSON text; or:
    choices = ["positive", "negative"]
    tags = { team = "search", project = "x" }                                        # chargeback tags
    trim = true                 # trim prompts before routing (sluice run --trim); default: the catalogue's

Validated strictly (`SubmissionOptions`, pydantic, unknown keys rejected): a manifest that cannot be read or
validated files the pair (the data file and its manifest) in failed/ with the reason, before anything is spent.
The options become the run's (`run_options`: the arguments of `flows.batch_run.sluice_run`) and are recorded on
it (`runs.submission`, `runs.tags`). The deadline orders the pass and lets the batch API be used; it is not
enforced: a run that will miss it is neither stopped nor hurried.

The manifest travels with its file: when a pass claims `incoming/NAME.parquet` it moves the manifest beside the
working copy (`processing/<run_id>/`), and files it under done/ or failed/ with it. `sluice submit` uploads the
manifest before the data file, so a pass never sees the file without it; upload by hand in the same order.
"""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluice.contracts.shapes import ShapeError, canonical_schema, schema_from_choices
from sluice.contracts.tags import TagError, check_tags
from sluice.dropbox.base import FAILED, INCOMING, MANIFEST_SUFFIXES, PROCESSING, DropBox, DropObject

MAX_MANIFEST_BYTES = 256 * 1024


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names it and says why."""


class SubmissionOptions(BaseModel):
    """The options one submission may give its run."""

    # strict: "5" is not a number, 1.5 not a priority; unknown keys are refused
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    response_schema: str | None = Field(default=None, alias="schema")
    choices: list[str] | None = None
    budget_usd: float | None = Field(default=None, gt=0)
    deadline_h: float | None = Field(default=None, gt=0)
    router: str | None = Field(default=None, min_length=1)
    premium_share: float | None = Field(default=None, ge=0, le=1)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    tags: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000)
    trim: bool | None = None

    @field_validator("response_schema", mode="before")
    @classmethod
    def _schema(cls, v: object) -> object:
        if v is None:
            return None
        if not isinstance(v, (str, dict)):
            raise ValueError("must be a JSON Schema: an object, or its JSON text")
        try:
            return canonical_schema(v)
        except ShapeError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict) -> dict:
        try:
            return check_tags(v)
        except TagError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _one_of_each(self) -> "SubmissionOptions":
        if self.response_schema is not None and self.choices is not None:
            raise ValueError("give schema or choices, not both")
        if self.budget_usd is not None and self.premium_share is not None:
            raise ValueError("give budget_usd or premium_share, not both")
        if self.choices is not None:
            try:
                schema_from_choices(self.choices)
            except ShapeError as exc:
                raise ValueError(str(exc)) from exc
        return self

    def run_options(self) -> dict:
        """Keyword arguments of `flows.batch_run.sluice_run` (only what the manifest gives)."""
        schema = schema_from_choices(self.choices) if self.choices is not None else self.response_schema
        given = {"budget_usd": self.budget_usd, "deadline_h": self.deadline_h, "router": self.router,
                 "premium_share": self.premium_share, "min_quality": self.min_quality, "response_schema": schema,
                 "trim": self.trim}
        return {**{k: v for k, v in given.items() if v is not None}, "tags": dict(self.tags)}

    def record(self, manifest: str | None) -> dict:
        """What `runs.submission` keeps: the options the manifest gave (validated), and the manifest's name."""
        return {**self.model_dump(by_alias=True, exclude_unset=True), "manifest": manifest}


def parse_manifest(name: str, data: bytes) -> SubmissionOptions:
    """A manifest's bytes (TOML for `.toml`, JSON for `.json`) as options; ManifestError names it and says why."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{name}: {len(data):,} bytes, over the {MAX_MANIFEST_BYTES:,} limit")
    try:
        text = data.decode("utf-8")
        doc = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if name.endswith(".json") else "TOML"
        raise ManifestError(f"{name}: not readable {kind} ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{name}: must hold one object of options, got {type(doc).__name__}")
    try:
        return SubmissionOptions.model_validate(doc)
    except ValidationError as exc:
        raise ManifestError(f"{name}: {_reasons(exc)}") from exc


def _reasons(exc: ValidationError) -> str:
    known = ", ".join(sorted(f.alias or k for k, f in SubmissionOptions.model_fields.items()))
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            out.append(f"unknown option {where!r} (options: {known})")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {msg}" if where else msg)
    return "; ".join(out)


def manifest_names(name: str) -> list[str]:
    """The manifests a data file may have: `batch.parquet` -> batch.sluice.toml, batch.sluice.json."""
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else name
    return [stem + s for s in MANIFEST_SUFFIXES]


def is_manifest(name: str) -> bool:
    return name.endswith(MANIFEST_SUFFIXES)


def claim_manifests(box: DropBox, obj: DropObject, run_id: str) -> list[str]:
    """Move a claimed file's manifests from incoming/ beside its working copy; returns their working keys (found
    there already when a crashed run's claim is taken over)."""
    keys = []
    for name in manifest_names(obj.name):
        working = f"{PROCESSING}/{run_id}/{name}"
        incoming = f"{INCOMING}/{name}"
        if not box.exists(working):
            if not box.exists(incoming):
                continue
            try:
                box.copy(incoming, working)
            except FileNotFoundError:  # gone between the two calls: no manifest
                continue
        box.delete(incoming)
        keys.append(working)
    return keys


def read_options(box: DropBox, keys: list[str]) -> SubmissionOptions | None:
    """The options of a claimed file's manifests (`claim_manifests`); None without one; ManifestError when both a
    TOML and a JSON manifest were given, or the one given is not valid."""
    if not keys:
        return None
    names = [PurePosixPath(k).name for k in keys]
    if len(keys) > 1:
        raise ManifestError(f"{' and '.join(names)}: give one manifest, not both")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / names[0]
        box.download(keys[0], local)
        return parse_manifest(names[0], local.read_bytes())


def file_manifests(box: DropBox, keys: list[str], dest: str) -> None:
    """File the manifests beside the data file's `dest` (done/<run_id>/NAME or failed/<run_id>/NAME)."""
    folder = str(PurePosixPath(dest).parent)
    for key in keys:
        box.copy(key, f"{folder}/{PurePosixPath(key).name}")
        box.delete(key)


def reject_manifests(box: DropBox, obj: DropObject, run_id: str) -> None:
    """A rejected resubmission's manifests go to failed/<run_id>/ with it."""
    for name in manifest_names(obj.name):
        try:
            box.copy(f"{INCOMING}/{name}", f"{FAILED}/{run_id}/{name}")
        except FileNotFoundError:
            continue
        box.delete(f"{INCOMING}/{name}")


def submit_manifest(box: DropBox, name: str, options: SubmissionOptions) -> str:
    """Upload `options` as NAME.sluice.json into incoming/ (before the data file); returns its key. An older
    manifest of the same name (.toml) is removed, so the file has exactly one."""
    json_name = manifest_names(name)[1]
    for old in manifest_names(name):
        if old != json_name:
            box.delete(f"{INCOMING}/{old}")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / json_name
        local.write_text(json.dumps(options.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True),
                                    indent=2, sort_keys=True))
        key = f"{INCOMING}/{json_name}"
        box.upload(local, key)
    return key


def order_by_priority(box: DropBox, objects: list[DropObject]) -> list[DropObject]:
    """Incoming files, highest manifest `priority` first, then the sooner `deadline_h`, then by name. A manifest
    that cannot be read counts as priority 0 here (its file fails with the reason when it is claimed)."""
    def key(obj: DropObject) -> tuple:
        keys = [k for k in (f"{INCOMING}/{n}" for n in manifest_names(obj.name)) if box.exists(k)]
        try:
            opts = read_options(box, keys) if len(keys) == 1 else None
        except (ManifestError, OSError):
            opts = None
        if opts is None:
            return (0, float("inf"), obj.key)
        return (-opts.priority, opts.deadline_h if opts.deadline_h is not None else float("inf"), obj.key)

    return sorted(objects, key=key)


__all__ = ["MANIFEST_SUFFIXES", "ManifestError", "SubmissionOptions", "claim_manifests",
           "file_manifests", "is_manifest", "manifest_names", "order_by_priority", "parse_manifest", "read_options",
           "reject_manifests", "submit_manifest"]
