"""The tier catalogue: which models Sluice may send a row to, how they run, and what they cost.

A tier is either self-hosted (a vLLM worker billed by the hour: its cost per row is the worker's billed time
apportioned to rows by tokens) or an API (billed per token at list prices). Tiers are ordered from cheapest to
most expensive; `baseline` names the tier every row would go to without Sluice.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOGUE = "catalogue.toml"


class CatalogueError(ValueError):
    """The catalogue file is missing, unreadable, or describes tiers that cannot run."""


class Worker(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_hour: float = Field(ge=0)


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    backend: Literal["vllm", "openai"]
    model: str = Field(min_length=1)
    # self-hosted (vllm)
    dtype: str = "auto"
    quantization: str | None = None
    worker: str | None = None
    # tokens (in + out) per second the worker sustains on this model: prices the tier per token when routing
    # under a dollar budget (unset: RouterSettings.self_hosted_tokens_per_s)
    tokens_per_s: float | None = Field(default=None, gt=0)
    max_model_len: int = Field(default=4096, gt=0)
    enforce_eager: bool = True
    seed: int = 0
    # API (openai-compatible)
    base_url: str | None = None
    api_key_env: str | None = None
    input_usd_per_1m: float | None = Field(default=None, ge=0)
    output_usd_per_1m: float | None = Field(default=None, ge=0)
    max_concurrency: int = Field(default=8, gt=0)
    request_timeout_s: float = Field(default=120, gt=0)
    max_retries: int = Field(default=2, ge=0)
    # demo and tests only: serve this model (a `packaged:` name or a local folder) on `base_url` with vLLM's
    # OpenAI-compatible server while the tier runs, standing in for a paid API that cannot be reached
    local_server: str | None = None

    @model_validator(mode="after")
    def _backend_fields(self) -> "Tier":
        if self.backend == "vllm" and not self.worker:
            raise ValueError(f"tier {self.name!r}: a vllm tier needs `worker` (the worker class it is billed as)")
        if self.backend == "openai":
            missing = [f for f in ("base_url", "input_usd_per_1m", "output_usd_per_1m") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"tier {self.name!r}: an openai tier needs {', '.join(missing)}")
        if self.local_server and self.backend != "openai":
            raise ValueError(f"tier {self.name!r}: `local_server` is for openai tiers")
        return self

    @property
    def self_hosted(self) -> bool:
        return self.backend == "vllm"

    def token_cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """List-price cost of one request on an API tier."""
        if self.input_usd_per_1m is None or self.output_usd_per_1m is None:
            raise CatalogueError(f"tier {self.name!r} has no per-token prices")
        return (input_tokens * self.input_usd_per_1m + output_tokens * self.output_usd_per_1m) / 1e6


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baseline: str
    workers: dict[str, Worker] = Field(default_factory=dict)
    tiers: list[Tier] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> "Catalogue":
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a tier ({', '.join(names)})")
        if self.tier(self.baseline).self_hosted:
            raise ValueError(f"baseline {self.baseline!r} must be a per-token API tier")
        for t in self.tiers:
            if t.worker and t.worker not in self.workers:
                raise ValueError(f"tier {t.name!r}: unknown worker {t.worker!r} (known: {', '.join(self.workers)})")
        return self

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def tier(self, name: str) -> Tier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no tier {name!r} in the catalogue ({', '.join(self.names)})")

    @property
    def baseline_tier(self) -> Tier:
        return self.tier(self.baseline)

    def worker_usd_per_hour(self, tier: Tier) -> float:
        if tier.worker is None:
            raise CatalogueError(f"tier {tier.name!r} is not self-hosted")
        return self.workers[tier.worker].usd_per_hour


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and validate a catalogue TOML file (the packaged default when `path` is None)."""
    if path is None:
        text = resources.files("models").joinpath(DEFAULT_CATALOGUE).read_text()
        source = f"models/{DEFAULT_CATALOGUE}"
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CatalogueError(f"{source}: cannot read catalogue: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return Catalogue.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise CatalogueError(f"{source}: invalid catalogue: {problems}") from exc
