#!/usr/bin/env bash
# Installs SLURM and munge, which the multi-node tests (tests/slurm_cluster.py,
# tests/test_cluster_support.py) need. Idempotent: does nothing when the tools are
# already there. Never fails the setup: where it cannot install (not root, no
# apt-get, apt failure) it prints one line saying the multi-node tests will be
# skipped, and exits 0.
set -u

TOOLS="slurmctld slurmd sbatch munged"
# The daemons live in /usr/sbin, which a non-root PATH may lack.
SEARCH_PATH="${PATH}:/usr/sbin:/sbin:/usr/local/sbin"

missing_tools() {
  local tool missing=""
  for tool in $TOOLS; do
    PATH="$SEARCH_PATH" command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
  done
  echo "${missing# }"
}

skip() {
  echo "install_cluster_tools: multi-node (SLURM) tests will be skipped: $*"
  exit 0
}

missing="$(missing_tools)"
[ -z "$missing" ] && exit 0

[ "$(id -u)" -eq 0 ] || skip "missing $missing and not root, so cannot apt-get install slurm-wlm munge"
command -v apt-get >/dev/null 2>&1 || skip "missing $missing and no apt-get on this machine"

log="$(mktemp -t install_cluster_tools.XXXXXX.log)"
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >>"$log" 2>&1
}

echo "install_cluster_tools: installing slurm-wlm munge (missing: $missing; log: $log)"
if ! apt_install; then
  # Package lists may be missing or stale: refresh them once and retry.
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 && apt_install; }; then
    skip "apt-get install slurm-wlm munge failed (see $log)"
  fi
fi

missing="$(missing_tools)"
[ -z "$missing" ] || skip "still missing $missing after installing slurm-wlm munge (see $log)"
rm -f "$log"
exit 0
