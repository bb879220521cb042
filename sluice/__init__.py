"""Sluice: offline batch LLM inference that makes the bill small without making the answers worse."""

from sluice.allocators import set_allocator_defaults

set_allocator_defaults()  # before anything imports polars or pyarrow (sluice/allocators.py)

__version__ = "0.1.0"
