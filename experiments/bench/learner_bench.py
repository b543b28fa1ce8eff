"""Learner speed on synthetic batches: SGD steps/s, compile time, memory, FLOP/s.

State observations by default; `--pixels=84` times the learner from 84x84 frame stacks
(uint8, `--frame_stack` frames, the pixel encoder, DrQ's random shift) with the `pixels`
preset's torsos (1024, 1024) unless `--layers` says otherwise.

Needs only agents/ and JAX (no TensorFlow, Reverb or dm_control), so it runs on
any accelerator image. Every figure is set beside this machine's dense-matmul
FLOP/s measured in the same run.
"""

import argparse
import platform
import resource
import statistics
import time

import jax
import numpy as np

import agents
from experiments import results_io
from experiments.bench import flops


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", default="all", help="mpo, dmpo, mog, or a comma list, or 'all'")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--obs_dim", type=int, default=24)
    parser.add_argument("--act_dim", type=int, default=6)
    parser.add_argument("--pixels", type=int, default=0, help="N: observations are N x N frame stacks (0: state)")
    parser.add_argument("--frame_stack", type=int, default=3)
    parser.add_argument("--layers", default=None,
                        help="policy and critic torso sizes, e.g. 256,256 (default: MPOConfig's for state, "
                             "1024,1024 for pixels, as the pixels preset)")
    parser.add_argument("--steps_per_call", default="1,8", help="one value or a comma list, e.g. 1,8")
    parser.add_argument("--policy_states", default="next", choices=["next", "current"],
                        help="'current' adds the second critic pass of Acme's JAX MPO")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds over all settings")
    parser.add_argument("--min_steps", type=int, default=80, help="SGD steps timed per setting, over all rounds")
    parser.add_argument("--out", default=None, help="JSON path (default runs/bench/learner-<time>.json)")


# The pixels preset's torsos (experiments/configs.py), here so that this benchmark needs only agents/.
PIXEL_LAYER_SIZES = (1024, 1024)


def synthetic_batch(rng: np.random.Generator, batch: int, obs_dim, act_dim: int, leading=()) -> agents.Transition:
    """obs_dim: a state size (float32 observations) or a frame-stack shape (S, H, W, 3) (uint8)."""
    shape = tuple(leading) + (batch,)

    def observations():
        if isinstance(obs_dim, int):
            return rng.normal(size=shape + (obs_dim,)).astype(np.float32)
        return rng.integers(0, 256, shape + tuple(obs_dim), dtype=np.uint8)

    return agents.Transition(
        observation=observations(),
        action=rng.uniform(-1, 1, shape + (act_dim,)).astype(np.float32),
        reward=rng.uniform(0, 1, shape).astype(np.float32),
        discount=np.full(shape, 0.99**5, np.float32),
        next_observation=observations(),
    )


def learner_shapes(args) -> tuple:
    """(observation shape for agents.Learner, config overrides) of the state or pixel setting."""
    if not args.pixels:
        layers = {} if args.layers is None else {"policy_layer_sizes": _sizes(args.layers),
                                                 "critic_layer_sizes": _sizes(args.layers)}
        return args.obs_dim, layers
    sizes = PIXEL_LAYER_SIZES if args.layers is None else _sizes(args.layers)
    return (args.frame_stack, args.pixels, args.pixels, 3), {"policy_layer_sizes": sizes, "critic_layer_sizes": sizes}


def _sizes(text: str) -> tuple:
    return tuple(int(part) for part in text.split(","))


def peak_memory_bytes() -> dict:
    result = {"host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        result["device_peak_bytes"] = stats["peak_bytes_in_use"]
    return result


class Setting:
    """One (agent, steps per call) configuration, compiled and ready to time."""

    def __init__(self, agent: str, args, steps_per_call: int):
        self.agent, self.steps_per_call = agent, steps_per_call
        observation_shape, overrides = learner_shapes(args)
        self.config = agents.make_config(agent, policy_states=args.policy_states, **overrides)
        learner = agents.Learner(self.config, observation_shape, args.act_dim)
        learner.check_batch_size(args.batch)
        rng = np.random.default_rng(0)
        self.state = learner.init(jax.random.PRNGKey(0))
        if steps_per_call == 1:
            batch = synthetic_batch(rng, args.batch, observation_shape, args.act_dim)
            self.batch = jax.device_put(batch, learner.batch_sharding)
            self.update = learner.update
        else:
            batch = synthetic_batch(rng, args.batch, observation_shape, args.act_dim, leading=(steps_per_call,))
            self.batch = jax.device_put(batch, learner.stacked_batch_sharding)
            self.update = learner.update_many

        start = time.perf_counter()
        compiled = self.update.lower(self.state, self.batch).compile()
        self.compile_seconds = time.perf_counter() - start
        compiled_flops = flops.xla_flops(compiled)
        self.xla_step_flops = compiled_flops / steps_per_call if compiled_flops else None
        self.step_flops = flops.matmul_flops(self.update, self.state, self.batch) // steps_per_call
        self.call_seconds = []
        self.time_calls(1)
        self.call_seconds.clear()  # the warm-up call is not a measurement

    def time_calls(self, calls: int) -> None:
        for _ in range(calls):
            start = time.perf_counter()
            self.state, self.metrics = self.update(self.state, self.batch)
            jax.block_until_ready(self.state)
            self.call_seconds.append(time.perf_counter() - start)

    def result(self) -> dict:
        seconds_per_step = statistics.median(self.call_seconds) / self.steps_per_call
        return {
            "agent": self.agent,
            "critic_head": self.config.critic_head.name,
            "steps_per_call": self.steps_per_call,
            "sgd_steps_per_s": 1.0 / seconds_per_step,
            "ms_per_step": 1e3 * seconds_per_step,
            "timed_calls": len(self.call_seconds),
            "compile_s": self.compile_seconds,
            "matmul_gflop_per_step": self.step_flops / 1e9,
            "xla_cost_analysis_gflop_per_step": self.xla_step_flops / 1e9 if self.xla_step_flops else None,
            "achieved_gflop_per_s": self.step_flops / seconds_per_step / 1e9,
            "finite_metrics": bool(all(np.all(np.isfinite(np.asarray(v))) for v in self.metrics.values())),
        }


def run(args: argparse.Namespace) -> int:
    names = list(agents.AGENT_HEADS) if args.agent == "all" else args.agent.split(",")
    for name in names:
        if name not in agents.AGENT_HEADS:
            raise SystemExit(f"error: unknown agent {name!r}; choose from {', '.join(agents.AGENT_HEADS)} or 'all'.")
    steps_per_call = [int(k) for k in args.steps_per_call.split(",")]
    device = jax.devices()[0]
    matmul_before = flops.measure_matmul_flops_per_s()
    print(f"device: {device.device_kind} x{len(jax.devices())} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"dense matmul (2048^3 fp32): {matmul_before / 1e9:.1f} GFLOP/s (measured again at the end)")
    observation = f"{args.frame_stack} x {args.pixels}x{args.pixels} frames" if args.pixels else f"obs {args.obs_dim}"
    print(f"batch {args.batch}, {observation}, act {args.act_dim}, policy_states={args.policy_states}")
    settings = [Setting(name, args, k) for name in names for k in steps_per_call]
    # Round-robin: every setting is timed in every round, so machine drift over the run
    # falls on all of them alike and the ratios between agents hold.
    for _ in range(args.rounds):
        for setting in settings:
            setting.time_calls(max(1, -(-args.min_steps // (setting.steps_per_call * args.rounds))))
    results = [setting.result() for setting in settings]
    print(f"{'agent':6} {'k':>3} {'steps/s':>9} {'ms/step':>8} {'compile s':>9} {'GFLOP/step':>10} {'GFLOP/s':>8}")
    for r in results:
        print(f"{r['agent']:6} {r['steps_per_call']:>3} {r['sgd_steps_per_s']:9.2f} {r['ms_per_step']:8.1f} "
              f"{r['compile_s']:9.2f} {r['matmul_gflop_per_step']:10.2f} {r['achieved_gflop_per_s']:8.1f}")
    # The machine's peak drifts (shared hosts); the higher of two readings makes every
    # fraction below a conservative one.
    matmul_after = flops.measure_matmul_flops_per_s()
    matmul_peak = max(matmul_before, matmul_after)
    print(f"dense matmul again: {matmul_after / 1e9:.1f} GFLOP/s; fractions use {matmul_peak / 1e9:.1f}")
    for r in results:
        r["fraction_of_matmul_peak"] = r["achieved_gflop_per_s"] * 1e9 / matmul_peak
        print(f"  {r['agent']:6} k={r['steps_per_call']}: {r['fraction_of_matmul_peak']:.0%} of matmul peak")
    scalar = {r["steps_per_call"]: r["ms_per_step"] for r in results if r["agent"] == "mpo"}
    for r in results:
        if r["steps_per_call"] in scalar:
            r["step_time_over_mpo"] = r["ms_per_step"] / scalar[r["steps_per_call"]]
    memory = peak_memory_bytes()
    print("peak memory: " + ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in memory.items()))
    output = {
        "benchmark": "learner",
        "device": {"kind": device.device_kind, "platform": jax.default_backend(), "count": len(jax.devices())},
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "matmul_gflop_per_s": matmul_peak / 1e9,
        "matmul_gflop_per_s_readings": [matmul_before / 1e9, matmul_after / 1e9],
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "benchmark")},
        "results": results,
        "peak_memory": memory,
        "time_utc": results_io.timestamp(),
    }
    path = results_io.write_json_exclusive(output, results_io.bench_output_path("learner", args.out))
    print(f"wrote {path}")
    return 0
