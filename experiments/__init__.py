"""Launch scripts, benchmarks and experiment configs; `testbed/` holds what tests and
benchmarks build (network-namespace hosts, a SLURM cluster), never imported by product code."""

from launch import moved

moved.install()
