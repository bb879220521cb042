"""`python -m sluice.cli`: the `sluice` command."""

from sluice.cli.app import app

app()
