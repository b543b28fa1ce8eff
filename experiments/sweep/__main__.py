"""python -m experiments.sweep plan SPEC.json --dir=SWEEP_DIR

plan: checks the spec (every run's whole config) and lists its runs, wave by wave: where
each goes and what it replays. Nothing is started or written.
"""

import argparse
import sys

from experiments.sweep.spec import SpecError, load_spec, sources


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["plan"])
    parser.add_argument("spec", help="the sweep spec, JSON (experiments/sweep/spec.py)")
    parser.add_argument("--dir", default="SWEEP_DIR", help="the sweep's directory (runs go under it)")
    args = parser.parse_args(argv)
    try:
        runs = load_spec(args.spec)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    waves = list(dict.fromkeys(run.wave for run in runs))
    print(f"{len(runs)} runs in {len(waves)} wave{'s' if len(waves) > 1 else ''} ({', '.join(waves)})")
    for run in runs:
        replayed = sources(run, runs)
        print(f"  {run.run_dir(args.dir)}  {run.max_env_steps:,} env steps"
              + (f"  replays {len(replayed)} run{'s' if len(replayed) > 1 else ''} of {', '.join(run.replay.waves)} "
                 f"at {run.replay.ratio:g}" if replayed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
