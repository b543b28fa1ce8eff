"""The device check: what a lent accelerator does with Relay's learners, in one command.

    python -m experiments.device_check [--out PATH] [--budget_s 270]
    python -m experiments.device_check --dry        (small sizes, on any machine: the default tests run it)

Needs only agents/ and JAX with flax, optax and chex (no TensorFlow, Reverb, Launchpad or
dm_control), so it runs on an accelerator image as it comes. In order, within --budget_s
(what does not fit is listed as skipped), the JSON rewritten after each configuration:

  - this device's dense-matmul FLOP/s (float32 at JAX's default precision, as the learner
    runs its matmuls), and its nominal peaks where the device is known;
  - one update's losses on the device against the CPU's, same state and batch, at the
    default precision and at full float32 ("float32"): on NVIDIA GPUs since Ampere, JAX
    runs float32 matmuls as TF32 by default, and the learner asks for no other precision;
  - SGD steps/s, compile time, achieved FLOP/s and peak device memory of mpo, dmpo and mog
    at Acme's sizes (MPOConfig's torsos; walker's 24 observations, 6 actions) for batch 256
    and 1024, k = 1 and 8 updates per call (`Learner.update_many`), then the 84x84 pixel
    learner (dmpo, 3 stacked frames, the pixels preset's 1024-unit torsos), batch 256.
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from typing import List, Optional

import jax
import numpy as np

import agents
from experiments import results_io
from experiments.bench import flops
from experiments.bench.learner_bench import PIXEL_LAYER_SIZES, Setting, peak_memory_bytes, synthetic_batch

# Nominal dense peaks, TFLOP/s (vendors' data sheets, SXM parts): float32, TF32, bf16.
NOMINAL_TFLOPS = {
    "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4},
    "H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4},
    "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0},
}


def nominal_peaks(device_kind: str) -> Optional[dict]:
    return next((peaks for name, peaks in NOMINAL_TFLOPS.items() if name in device_kind), None)


def configurations(dry: bool) -> List[dict]:
    """The learner settings, in the order they are timed: learner_bench's flags for each."""
    if dry:
        # update_many and the pixel learner's update once each, compiles being most of the time (the
        # agents differ only in their critic head, which the learner tests cover on every machine).
        return [dict(agent="mog", batch=16, steps_per_call=2, obs_dim=24, layers="32,32", pixels=0),
                dict(agent="dmpo", batch=8, steps_per_call=1, obs_dim=24, layers="32,32", pixels=16)]
    state = {batch: [dict(agent=agent, batch=batch, steps_per_call=k, obs_dim=24, layers=None, pixels=0)
                     for agent in ("mpo", "dmpo", "mog") for k in (1, 8)] for batch in (256, 1024)}
    pixel_layers = ",".join(str(size) for size in PIXEL_LAYER_SIZES)
    pixels = [dict(agent="dmpo", batch=256, steps_per_call=k, obs_dim=24, layers=pixel_layers, pixels=84) for k in (1, 8)]
    # The pixel learner's first call before the larger batches: the budget cuts from the end.
    return state[256] + pixels[:1] + state[1024] + pixels[1:]


def _flags(configuration: dict) -> argparse.Namespace:
    return argparse.Namespace(act_dim=6, frame_stack=3, policy_states="next", **configuration)


def time_configuration(configuration: dict, seconds: float, matmul_flops_per_s: float) -> dict:
    """learner_bench's Setting, timed for about `seconds` after its compile and warm-up call:
    calls dispatched back to back, as the learner loop makes them, and waited for every 10."""
    setting = Setting(configuration["agent"], _flags(configuration), configuration["steps_per_call"])
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 10:
        for _ in range(10):
            setting.state, setting.metrics = setting.update(setting.state, setting.batch)
        jax.block_until_ready(setting.state)
        calls += 10
    setting.call_seconds = [(time.perf_counter() - start) / calls]
    # The process's peak so far: the configurations grow, each the largest yet in its series.
    result = {**configuration, **setting.result(), **peak_memory_bytes(), "timed_calls": calls}
    result["fraction_of_matmul_peak"] = result["achieved_gflop_per_s"] * 1e9 / matmul_flops_per_s
    result["samples_per_s"] = result["sgd_steps_per_s"] * configuration["batch"]
    return result


def losses_against_cpu(dry: bool) -> dict:
    """One mog update from the same state and batch on the CPU and on the default device, at the
    default matmul precision and at float32; each metric's value and relative differences."""
    cpu = jax.devices("cpu")[0]
    layers = (32, 32) if dry else None
    overrides = {} if layers is None else {"policy_layer_sizes": layers, "critic_layer_sizes": layers}
    config = agents.make_config("mog", **overrides)
    batch = synthetic_batch(np.random.default_rng(1), 16 if dry else 256, 24, 6)

    def one_update(devices, precision=None) -> dict:
        learner = agents.Learner(config, 24, 6, devices=devices)  # a new jit: precision is read as it traces
        with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
            state = learner.init(jax.random.PRNGKey(0))
            _, metrics = learner.update(state, jax.device_put(batch, learner.batch_sharding))
            return {name: float(value) for name, value in jax.device_get(metrics).items()}

    reference = one_update([cpu], "float32")
    device = jax.devices()[0]
    sides = {"cpu_float32": reference, "device_default": one_update([device]),
             "device_float32": one_update([device], "float32")}
    relative = {
        side: {name: abs(values[name] - reference[name]) / max(abs(reference[name]), 1e-8) for name in reference}
        for side, values in sides.items() if side != "cpu_float32"}
    return {"agent": "mog", "batch": len(batch.reward), "metrics": sides, "relative_difference_to_cpu": relative,
            "max_relative_difference_to_cpu": {side: max(values.values()) for side, values in relative.items()},
            "learner_matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", None)
                                            or "default (not set)")}


def run(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.device_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="small sizes, a few seconds each (any machine)")
    parser.add_argument("--budget_s", type=float, default=270.0, help="configurations past it are skipped")
    parser.add_argument("--seconds_per_configuration", type=float, default=None,
                        help="timing after compile (default 3, dry 0.2)")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/device_check-<time>.json)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    seconds = args.seconds_per_configuration or (0.2 if args.dry else 3.0)
    path = results_io.bench_output_path("device_check" + ("_dry" if args.dry else ""), args.out)
    if os.path.exists(path):
        raise SystemExit(f"error: {path} already exists and is not overwritten; pass another --out path.")
    device = jax.devices()[0]
    matmul = flops.measure_matmul_flops_per_s(size=512 if args.dry else 8192)
    report = {"benchmark": "device_check", "dry": args.dry, "time_utc": results_io.timestamp(),
              "device": {"kind": device.device_kind, "platform": device.platform, "count": len(jax.devices())},
              "jax_version": jax.__version__, "python": platform.python_version(),
              "host": {"processor": results_io.cpu_name(), "cores": os.cpu_count()},
              "matmul_float32_default_precision_gflop_per_s": matmul / 1e9,
              "nominal_tflop_per_s": nominal_peaks(device.device_kind),
              "losses_against_cpu": None, "results": [], "skipped": [], "errors": []}

    def write() -> None:
        report["elapsed_s"] = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.tmp", "w") as file:
            json.dump(report, file, indent=2, sort_keys=True)
        os.replace(f"{path}.tmp", path)

    print(f"device: {device.device_kind} x{len(jax.devices())} ({device.platform}), jax {jax.__version__}; "
          f"float32 matmul at the default precision {matmul / 1e12:.2f} TFLOP/s", flush=True)
    report["losses_against_cpu"] = losses_against_cpu(args.dry)
    print("losses against the CPU's, largest relative difference: " + ", ".join(
        f"{side} {value:.2e}" for side, value in report["losses_against_cpu"]["max_relative_difference_to_cpu"].items()),
        flush=True)
    write()
    for configuration in configurations(args.dry):
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append(configuration)
            continue
        try:
            result = time_configuration(configuration, seconds, matmul)
        except Exception as error:  # e.g. out of memory: the others still run
            report["errors"].append({**configuration, "error": f"{type(error).__name__}: {error}"[:2000]})
            print(f"{configuration}: {type(error).__name__}: {error}"[:500], flush=True)
        else:
            report["results"].append(result)
            observation = f"{result['pixels']}x{result['pixels']} pixels" if result["pixels"] else "state"
            print(f"{result['agent']:5} {observation:14} batch {result['batch']:5} k={result['steps_per_call']}: "
                  f"{result['sgd_steps_per_s']:9.1f} steps/s, {result['ms_per_step']:7.3f} ms/step, compile "
                  f"{result['compile_s']:5.1f} s, {result['achieved_gflop_per_s']:9.1f} GFLOP/s "
                  f"({result['fraction_of_matmul_peak']:.0%} of matmul)", flush=True)
        write()
    print(f"wrote {path} ({len(report['results'])} configurations, {len(report['skipped'])} skipped, "
          f"{len(report['errors'])} failed) in {time.perf_counter() - started:.0f} s", flush=True)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(run())
