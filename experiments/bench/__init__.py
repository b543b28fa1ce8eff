"""Benchmarks: `python -m experiments.bench <name> [flags]`; each prints figures and writes JSON."""
