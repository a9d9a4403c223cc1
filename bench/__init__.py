"""Benchmarks, each printing its figure beside a baseline measured in the same run; run each from the repository
root as `python -m bench.NAME` (they import the test tables and the digits example from there)."""
