"""Sluice: offline batch LLM inference that makes the bill small without making the answers worse."""

__version__ = "0.1.0"
