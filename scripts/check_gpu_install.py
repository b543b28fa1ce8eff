"""Checks, without installing it, that Relay's GPU install resolves to exactly what
requirements/gpu.txt pins: `pip install --dry-run "jax[cuda12]==<the pinned jax>"` against
requirements/constraints.txt and requirements/gpu.txt. Run by 'make setup' (it needs the
package index, as the setup does). Exit 1, naming what differs, when it does not.

    .venv/bin/python scripts/check_gpu_install.py
"""

import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS = os.path.join(ROOT, "requirements", "constraints.txt")
GPU = os.path.join(ROOT, "requirements", "gpu.txt")


def pins(path: str) -> dict:
    """name -> version of every `name==version` line (names in pip's normal form)."""
    found = {}
    with open(path) as file:
        for line in file:
            match = re.match(r"^\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
            if match:
                found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def main() -> int:
    jax_version = pins(CONSTRAINTS)["jax"]
    with tempfile.TemporaryDirectory() as scratch:
        report_path = os.path.join(scratch, "report.json")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
             "--ignore-installed", "--report", report_path, "--constraint", CONSTRAINTS, "--constraint", GPU,
             f"jax[cuda12]=={jax_version}"], capture_output=True, text=True)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "is ignored: it is neither" not in line]
            print(f"error: jax[cuda12]=={jax_version} does not resolve against requirements/constraints.txt and "
                  "requirements/gpu.txt:\n" + "\n".join(errors[-20:]), file=sys.stderr)
            return 1
        with open(report_path) as file:
            resolved = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
                        for item in json.load(file)["install"]}
    base, gpu = pins(CONSTRAINTS), pins(GPU)
    added = {name: version for name, version in resolved.items() if name not in base}
    unpinned = {name: version for name, version in added.items() if gpu.get(name) != version}
    unused = sorted(set(gpu) - set(added))
    if unpinned or unused:
        print("error: the GPU install differs from requirements/gpu.txt: "
              + (f"resolved but not pinned there (or at another version): {unpinned}. " if unpinned else "")
              + (f"pinned there but not installed: {unused}. " if unused else "")
              + "Update requirements/gpu.txt to what pip resolves, and say why in BUILD.md.", file=sys.stderr)
        return 1
    print(f"GPU install: jax[cuda12]=={jax_version} resolves to the {len(gpu)} packages requirements/gpu.txt pins "
          f"({', '.join(f'{name} {version}' for name, version in sorted(added.items()) if 'cudnn' in name or 'plugin' in name)}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
