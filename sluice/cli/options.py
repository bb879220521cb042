"""Options several `sluice` commands share (typer annotations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

WarehouseOpt = Annotated[Optional[Path], typer.Option(help="DuckDB file to land results in [data/warehouse.duckdb]")]
CatalogueOpt = Annotated[Optional[Path], typer.Option(help="tier catalogue TOML [models/catalogue.toml]")]
DataDirOpt = Annotated[Optional[Path], typer.Option(help="data folder: models cache, run folders [data]")]
