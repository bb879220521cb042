"""Test servers and harnesses the tests and benches share (never imported by the product)."""
