"""The tier catalogue: which models Sluice may send a row to, how they run, and what they cost.

A tier is either self-hosted (a vLLM worker billed by the hour: its cost per row is the worker's billed time
apportioned to rows by tokens), an API (billed per token at list prices), or a replay tier: recorded answers of a
real model (a Parquet file), priced like an API tier at its list prices, never sent anywhere
(models/backends/replay.py). Tiers are ordered from cheapest to most expensive; `baseline` names the tier every
row would go to without Sluice. `judge` (optional) names the tier asked whether a cheap answer is acceptable given the
premium one, for shadow pairs of free text (sluice/stages/review/judge.py); unset, those pairs stay unjudged.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from models.pricing import api_price, cost_usd

DEFAULT_CATALOGUE = "catalogue.toml"
# a replay tier's answers file: `response`, and the request as `prompt` (+ `system`) or `messages` (OpenAI chat)
REPLAY_REQUEST_COLUMNS = ("prompt", "messages")


class CatalogueError(ValueError):
    """The catalogue file is missing, unreadable, or describes tiers that cannot run."""


class Worker(BaseModel):
    """A class of machine a self-hosted tier can run on, billed by the hour."""

    model_config = ConfigDict(extra="forbid")
    usd_per_hour: float = Field(ge=0)
    # spec-sheet memory bandwidth, GB/s: decoding is bandwidth-bound, so a throughput measured on one worker
    # class scales to another by this ratio when nothing better is known (sluice/reports/economics.py)
    memory_bandwidth_gbs: float | None = Field(default=None, gt=0)


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    backend: Literal["vllm", "openai", "anthropic", "replay"]
    model: str = Field(min_length=1)
    # self-hosted (vllm)
    dtype: str = "auto"
    quantization: str | None = None
    # Before a run uses this tier, it and the tier named here answer `validation_rows` of its rows, and it is used
    # only if the 95% interval on the accuracy difference shows it at most `validation_margin` worse
    # (sluice/stages/infer/tier_validation.py); a refused tier's rows go to the next tier. Required for a tier with
    # `quantization`; name one for a pre-quantised checkpoint too (AWQ, GPTQ, compressed-tensors): the
    # full-precision model on a bigger worker, or a premium tier. Never the tier itself.
    reference_tier: str | None = None
    validation_rows: int = Field(default=200, ge=1)
    validation_margin: float = Field(default=0.05, ge=0, le=1)
    worker: str | None = None
    # tokens (in + out) per second the worker sustains on this model: prices the tier per token when routing
    # under a dollar budget (unset: RouterSettings.self_hosted_tokens_per_s)
    tokens_per_s: float | None = Field(default=None, gt=0)
    # measured output tokens/s of this tier's model on other worker classes (your benchmarks): these beat the
    # bandwidth-scaled estimate when `sluice economics` compares worker classes
    throughput_by_worker: dict[str, float] = Field(default_factory=dict)
    # further vLLM engine arguments, passed as they are: tensor_parallel_size / pipeline_parallel_size for a model
    # that needs several GPUs, gpu_memory_utilization, kv_cache_dtype, max_num_seqs, ...
    engine_args: dict[str, int | float | str | bool] = Field(default_factory=dict)
    # return each answer's mean token log-probability (the cascade's confidence signal); costs a little speed
    logprobs: bool = False
    max_model_len: int = Field(default=4096, gt=0)
    enforce_eager: bool = True
    seed: int = 0
    # API (openai-compatible or anthropic)
    base_url: str | None = None
    api_key_env: str | None = None
    # name of a Prefect Secret block holding the key, used when `api_key_env` is unset or empty
    api_key_secret: str | None = None
    input_usd_per_1m: float | None = Field(default=None, ge=0)
    output_usd_per_1m: float | None = Field(default=None, ge=0)
    # input tokens served from the provider's prompt cache (OpenAI `cached_tokens`, Anthropic cache reads);
    # unset: billed as plain input
    cached_input_usd_per_1m: float | None = Field(default=None, ge=0)
    # provider batch API prices (OpenAI Batch, Anthropic Message Batches: list price -50%)
    batch_input_usd_per_1m: float | None = Field(default=None, ge=0)
    batch_output_usd_per_1m: float | None = Field(default=None, ge=0)
    batch_cached_input_usd_per_1m: float | None = Field(default=None, ge=0)
    max_concurrency: int = Field(default=8, gt=0)
    request_timeout_s: float = Field(default=120, gt=0)
    max_retries: int = Field(default=2, ge=0)
    # client-side limits per tier (one provider + model): requests and tokens per `rate_limit_period_s`
    # (a minute at providers; tests shrink the period to stay fast). Unset: no limit of that kind.
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    rate_limit_period_s: float = Field(default=60.0, gt=0)
    # retry backoff: exponential with jitter from `backoff_initial_s` up to `backoff_max_s`; a `Retry-After`
    # header, when sent, is honoured instead
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    # provider batch API: "off", "always", or "auto" (used when the tier's deadline leaves the provider's whole
    # completion window, `batch_window_h`, to answer)
    batch_api: Literal["off", "auto", "always"] = "off"
    deadline_h: float | None = Field(default=None, gt=0)
    batch_window_h: float = Field(default=24.0, gt=0)
    batch_poll_interval_s: float = Field(default=30.0, gt=0)
    # false: submit the provider batches, journal them and end the run "waiting on provider batch" instead of
    # polling for up to a day; the `collect-batches` flow polls them and resumes the run once they have ended
    batch_wait: bool = True
    # per-file (OpenAI) or per-batch (Anthropic) limits; unset: the provider's documented limit
    batch_max_requests: int | None = Field(default=None, gt=0)
    batch_max_bytes: int | None = Field(default=None, gt=0)
    # demo and tests only: serve this model (a `packaged:` name or a local folder) on `base_url` with vLLM's
    # OpenAI-compatible server while the tier runs, standing in for a paid API that cannot be reached
    local_server: str | None = None
    # replay: a Parquet file of recorded answers (`prompt`/`system` or `messages`, `response`, optional
    # `input_tokens`, `output_tokens`, `finish_reason`, `latency_ms`); relative to the catalogue file's folder
    answers: Path | None = None
    # replay: counts the tokens a recorded answer lacks (a local Hugging Face tokenizer folder, relative to the
    # catalogue's folder, or a `packaged:` name); unset: `models.tokens.estimate_tokens`, flagged as estimated
    tokenizer: str | None = None

    @field_validator("answers", "tokenizer", mode="after")
    @classmethod
    def _relative_to_catalogue(cls, value, info: ValidationInfo):
        """Relative paths are read from the catalogue file's folder (`load_catalogue` passes it as context)."""
        base = (info.context or {}).get("catalogue_dir")
        if value is None or base is None or str(value).startswith("packaged:") or Path(value).is_absolute():
            return value
        resolved = Path(base) / value
        return resolved if isinstance(value, Path) else str(resolved)

    @model_validator(mode="after")
    def _backend_fields(self) -> "Tier":
        if self.backend == "vllm" and not self.worker:
            raise ValueError(f"tier {self.name!r}: a vllm tier needs `worker` (the worker class it is billed as)")
        if self.backend in ("openai", "anthropic", "replay"):
            needed = ("base_url", "input_usd_per_1m", "output_usd_per_1m") if self.backend == "openai" else (
                "answers", "input_usd_per_1m", "output_usd_per_1m") if self.backend == "replay" else (
                "input_usd_per_1m", "output_usd_per_1m")
            missing = [f for f in needed if getattr(self, f) is None]
            if missing:
                article = "a" if self.backend == "replay" else "an"
                raise ValueError(f"tier {self.name!r}: {article} {self.backend} tier needs {', '.join(missing)}")
        if self.local_server and self.backend != "openai":
            raise ValueError(f"tier {self.name!r}: `local_server` is for openai tiers")
        if self.backend != "replay" and (self.answers is not None or self.tokenizer is not None):
            raise ValueError(f"tier {self.name!r}: `answers` and `tokenizer` are for replay tiers")
        if self.replayed:
            if self.batch_api != "off":
                raise ValueError(f"tier {self.name!r}: a replay tier answers at once at list prices: no `batch_api`")
            check_answers_file(self.name, self.answers)
        if self.batch_api != "off":
            if self.self_hosted:
                raise ValueError(f"tier {self.name!r}: `batch_api` is for API tiers")
            missing = [f for f in ("batch_input_usd_per_1m", "batch_output_usd_per_1m") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"tier {self.name!r}: batch_api = {self.batch_api!r} needs {', '.join(missing)}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"tier {self.name!r}: backoff_max_s must be >= backoff_initial_s")
        return self

    @property
    def self_hosted(self) -> bool:
        return self.backend == "vllm"

    @property
    def replayed(self) -> bool:
        """Answered from recorded answers (priced like an API tier, no network, no rate limits)."""
        return self.backend == "replay"

    def token_cost_usd(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, batch: bool = False
    ) -> float:
        """Cost of one request on an API tier: list prices, or batch prices for a provider batch API answer.

        `input_tokens` counts every input token; `cached_input_tokens` of them (prompt-cache reads) are billed at
        the cached price when the catalogue has one. In a batch without its own cached price they are billed as
        batch input (no further discount assumed: never under-bill).
        """
        if self.input_usd_per_1m is None or self.output_usd_per_1m is None:
            raise CatalogueError(f"tier {self.name!r} has no per-token prices")
        if batch and (self.batch_input_usd_per_1m is None or self.batch_output_usd_per_1m is None):
            raise CatalogueError(f"tier {self.name!r} has no batch prices")
        cached = min(max(cached_input_tokens, 0), input_tokens)
        return cost_usd(api_price(self, batch), input_tokens, output_tokens, cached)


def check_answers_file(tier: str, path: Path | None) -> None:
    """A replay tier's answers file exists, is Parquet and has the columns replay needs, of usable types."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path is None or not Path(path).is_file():
        raise ValueError(f"tier {tier!r}: answers file {path} does not exist")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"tier {tier!r}: answers file {path} is not a readable Parquet file ({exc})") from exc
    cols = set(schema.names)
    missing = [c for c in ("response",) if c not in cols]
    if not cols & set(REPLAY_REQUEST_COLUMNS):
        missing.append(" or ".join(REPLAY_REQUEST_COLUMNS))
    if missing:
        raise ValueError(f"tier {tier!r}: answers file {path} has no {', '.join(missing)} column "
                         f"(it has: {', '.join(schema.names) or 'none'})")
    text = (pa.types.is_string, pa.types.is_large_string)
    for col, ok in (("prompt", text), ("system", text), ("response", text),
                    ("input_tokens", (pa.types.is_integer,)), ("output_tokens", (pa.types.is_integer,))):
        if col in cols and not any(f(schema.field(col).type) for f in ok):
            raise ValueError(f"tier {tier!r}: answers file {path}: column `{col}` is {schema.field(col).type}, "
                             f"expected {'text' if ok is text else 'integers'}")


def _check_reference(t: Tier, catalogue: "Catalogue") -> None:
    """A tier's `reference_tier` names another tier that does not run the same model the same way."""
    if t.reference_tier is None:
        if t.self_hosted and t.quantization:
            raise ValueError(f"tier {t.name!r} is quantised ({t.quantization}): name the tier it is validated "
                             "against before use (`reference_tier`, e.g. the full-precision model or a premium tier)")
        return
    if t.reference_tier not in catalogue.names:
        raise ValueError(f"tier {t.name!r}: reference_tier {t.reference_tier!r} is not a tier ({', '.join(catalogue.names)})")
    ref = catalogue.tier(t.reference_tier)
    same = ("backend", "model", "dtype", "quantization", "answers", "base_url")
    if ref.name == t.name or all(getattr(ref, f) == getattr(t, f) for f in same):
        raise ValueError(f"tier {t.name!r}: reference_tier {ref.name!r} runs the same model the same way; a tier is "
                         "validated against another model or precision, never against itself")


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baseline: str
    # the tier that judges free-text shadow pairs (quality assurance, billed as its own line); None: no judge
    judge: str | None = None
    # trim every pending prompt before routing (sluice/stages/route/brevity.py); `sluice run --trim/--no-trim` wins
    trim: bool = False
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
        if self.judge is not None and self.judge not in names:
            raise ValueError(f"judge {self.judge!r} is not a tier ({', '.join(names)})")
        for t in self.tiers:
            _check_reference(t, self)
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

    @property
    def judge_tier(self) -> Tier | None:
        return None if self.judge is None else self.tier(self.judge)

    def with_run_deadline(self, hours: float | None) -> "Catalogue":
        """This catalogue with a run's deadline (hours from now) on every API tier: a tier with
        `batch_api = "auto"` uses its provider's batch API when the deadline leaves the whole batch window."""
        if hours is None:
            return self
        if hours <= 0:
            raise CatalogueError(f"a run deadline must be positive hours, got {hours}")
        tiers = [t if t.self_hosted else t.model_copy(update={"deadline_h": hours}) for t in self.tiers]
        return self.model_copy(update={"tiers": tiers})

    def worker_usd_per_hour(self, tier: Tier) -> float:
        if tier.worker is None:
            raise CatalogueError(f"tier {tier.name!r} is not self-hosted")
        return self.workers[tier.worker].usd_per_hour


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and validate a catalogue TOML file (the packaged default when `path` is None)."""
    if path is None:
        text = resources.files("models").joinpath(DEFAULT_CATALOGUE).read_text()
        source = f"models/{DEFAULT_CATALOGUE}"
        folder = Path(str(resources.files("models")))
    else:
        source = str(path)
        folder = Path(path).resolve().parent
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CatalogueError(f"{source}: cannot read catalogue: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return Catalogue.model_validate(data, context={"catalogue_dir": folder})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise CatalogueError(f"{source}: invalid catalogue: {problems}") from exc
