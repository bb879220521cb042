"""Prefect tasks: thin wrappers that move files between the plain stage functions in `sluice/`."""
