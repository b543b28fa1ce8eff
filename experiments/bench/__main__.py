"""python -m experiments.bench {env} [flags]  (run with --help for each benchmark's flags)."""

import argparse
import sys

from experiments.bench import env_bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    env_bench.add_arguments(benchmarks.add_parser("env", help=env_bench.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    runners = {"env": env_bench.run}
    return runners[args.benchmark](args)


if __name__ == "__main__":
    sys.exit(main())
