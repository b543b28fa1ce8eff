"""Sweeps: seeds and variants as one command, each wave of runs replaying earlier waves'
experience. `spec.py`: the spec and the runs it expands to."""
