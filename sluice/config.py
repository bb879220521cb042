"""Sluice's settings: every path and threshold in one typed place, loaded once per run.

Precedence: explicit arguments (CLI flags, flow parameters) > environment (`SLUICE_*`) > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalogue import Catalogue, load_catalogue


class RouterSettings(BaseModel):
    """Thresholds of the heuristic gatekeeper: a row's complexity score in [0, 1] picks its tier.

    score < small_below -> the cheapest tier; score >= premium_from -> the last (premium) tier; anything between
    goes to the middle tier(s), split evenly by score when the catalogue has more than three tiers.
    """

    model_config = ConfigDict(extra="forbid")
    small_below: float = Field(default=0.30, ge=0, le=1)
    premium_from: float = Field(default=0.60, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RouterSettings":
        if self.small_below > self.premium_from:
            raise ValueError("router.small_below must not exceed router.premium_from")
        return self


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path("data")
    warehouse: Path | None = None  # default: <data_dir>/warehouse.duckdb
    runs_dir: Path | None = None  # default: <data_dir>/runs (stage hand-off files, one folder per run)
    catalogue_path: Path | None = None  # default: the packaged models/catalogue.toml
    default_max_tokens: int = Field(default=256, gt=0)
    router: RouterSettings = Field(default_factory=RouterSettings)

    @model_validator(mode="after")
    def _derived_paths(self) -> "Settings":
        if self.warehouse is None:
            self.warehouse = self.data_dir / "warehouse.duckdb"
        if self.runs_dir is None:
            self.runs_dir = self.data_dir / "runs"
        return self

    def catalogue(self) -> Catalogue:
        return load_catalogue(self.catalogue_path)


_ENV = {
    "data_dir": "SLUICE_DATA_DIR",
    "warehouse": "SLUICE_WAREHOUSE",
    "runs_dir": "SLUICE_RUNS_DIR",
    "catalogue_path": "SLUICE_CATALOGUE",
}


def load_settings(**overrides: object) -> Settings:
    """Defaults, then SLUICE_* environment variables, then explicit non-None overrides."""
    values: dict[str, object] = {k: os.environ[v] for k, v in _ENV.items() if os.environ.get(v)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(values)
