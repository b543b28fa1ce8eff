#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs Relay (editable, with test extras) from the
# pinned constraints, then checks that the whole stack imports. Called by 'make setup';
# safe to re-run (the Makefile skips it when nothing it depends on has changed).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
CONSTRAINTS=requirements/constraints.txt
PIP_VERSION=24.3.1
SETUPTOOLS_VERSION=75.3.0
WHEEL_VERSION=0.45.1

is_python310() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1
}

find_python310() {
  # RELAY_PYTHON wins; then python3.10 on PATH (a pyenv shim there may answer
  # "command not found" when the global version differs, hence the real check);
  # then pyenv's own installs, newest patch first.
  local candidate
  for candidate in "${RELAY_PYTHON:-}" "$(command -v python3.10 || true)"; do
    if [ -n "$candidate" ] && is_python310 "$candidate"; then
      echo "$candidate"; return 0
    fi
  done
  local pyenv_root
  pyenv_root="$( (command -v pyenv >/dev/null && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  for candidate in $(ls -d "$pyenv_root"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -t. -k3 -n -r); do
    if is_python310 "$candidate"; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

if [ -x "$VENV/bin/python" ]; then
  if ! is_python310 "$VENV/bin/python"; then
    echo "error: $VENV exists but is not Python 3.10 ($("$VENV/bin/python" --version 2>&1))." >&2
    echo "Relay needs Python 3.10 (see BUILD.md). Remove it with 'rm -rf $VENV' and run 'make setup' again." >&2
    exit 1
  fi
else
  if ! PYTHON=$(find_python310); then
    cat >&2 <<'MSG'
error: no Python 3.10 found. Relay needs exactly Python 3.10: dm-launchpad has no wheel for
3.11 or newer, and Reverb/Launchpad are built against TensorFlow 2.8 (see BUILD.md).
Get one of:
  - pyenv:          pyenv install 3.10.13   (then re-run 'make setup'; it is found automatically)
  - Ubuntu 22.04:   apt-get install python3.10 python3.10-venv
  - other distros:  the deadsnakes PPA, conda ('conda create -n py310 python=3.10'), or python.org
or point RELAY_PYTHON at a Python 3.10 interpreter: make setup RELAY_PYTHON=/path/to/python3.10
MSG
    exit 1
  fi
  echo "Creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
  "$PYTHON" -m venv "$VENV"
fi

# Some machines' pip configs name local index folders that do not exist; pip warns once per
# package about them. Those lines are noise here, everything else is shown.
quiet_pip() {
  "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

start=$(date +%s)
quiet_pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION" "wheel==$WHEEL_VERSION"
# --no-build-isolation --use-pep517: build Relay's editable wheel (PEP 660) with the pinned setuptools above
# instead of fetching a fresh one into a throwaway environment.
quiet_pip install --quiet --disable-pip-version-check --no-build-isolation --use-pep517 \
  --constraint "$CONSTRAINTS" --editable ".[test]"
quiet_pip check
"$VENV/bin/python" scripts/verify_install.py
echo "Relay installed in $VENV in $(( $(date +%s) - start )) s."
