"""Tier catalogue, packaged models, and one backend per kind of model service."""
