"""The device check (experiments/device_check.py) in its dry mode: the command a lent GPU runs,
kept working on every machine. Its figures here are the CPU's; what is checked is that every
configuration ran and reports what the GPU run must."""

import json
import subprocess
import sys

import pytest

from test_program import ROOT


def test_the_device_check_runs_dry_and_writes_every_figure(tmp_path):
    out = tmp_path / "device_check.json"
    result = subprocess.run([sys.executable, "-m", "experiments.device_check", "--dry", f"--out={out}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["device"]["platform"] == "cpu" and report["errors"] == [] and report["skipped"] == []
    assert report["matmul_float32_default_precision_gflop_per_s"] > 0
    # On a CPU "the device" is the CPU: one update's losses agree to float32 rounding.
    losses = report["losses_against_cpu"]
    assert set(losses["metrics"]) == {"cpu_float32", "device_default", "device_float32"}
    assert {"critic_loss", "policy_loss"} <= set(losses["metrics"]["cpu_float32"])
    assert max(losses["max_relative_difference_to_cpu"].values()) < 1e-5
    ran = [(r["agent"], r["steps_per_call"], r["pixels"]) for r in report["results"]]
    assert ran == [("mog", 2, 0), ("dmpo", 1, 16)]
    for r in report["results"]:
        assert r["sgd_steps_per_s"] > 0 and r["compile_s"] > 0 and r["timed_calls"] >= 10
        assert r["matmul_gflop_per_step"] > 0 and 0 < r["fraction_of_matmul_peak"] and r["finite_metrics"]
        assert r["achieved_gflop_per_s"] == pytest.approx(r["matmul_gflop_per_step"] * r["sgd_steps_per_s"])
        assert r["host_peak_rss_bytes"] > 0
    # The pixel learner's encoder convolutions are counted: at least its first layer's forward pass
    # over the batch (16 -> 7 pixels, 32 channels, 3 x 3 x 9 inputs each: 3 stacked RGB frames).
    pixels = report["results"][-1]
    assert pixels["matmul_gflop_per_step"] * 1e9 > 2 * pixels["batch"] * 7 * 7 * 32 * (3 * 3 * 9)
    # Written again after each configuration: a run cut short keeps what it measured.
    assert "wrote" in result.stdout and not (tmp_path / "device_check.json.tmp").exists()
