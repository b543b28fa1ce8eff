"""Launch scripts, benchmarks and experiment configs."""
