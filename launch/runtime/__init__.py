"""The launch runtime: `launch()` (launcher.py) and everything it uses to run a program as
threads, processes or a SLURM job, and to watch it. Kept free of imports: every node
process's supervisor starts in `launch.runtime.entry`."""
