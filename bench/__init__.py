"""Benchmarks of the serving engine (not tests): `python -m bench`."""
