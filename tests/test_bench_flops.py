"""The FLOP counter the learner benchmark reports, against hand counts."""

import json

import jax
import jax.numpy as jnp
import pytest

from experiments.bench import flops
from experiments.bench import __main__ as bench


def test_matmul_flops_of_one_dot():
    a, b = jnp.ones((8, 5)), jnp.ones((5, 3))
    assert flops.matmul_flops(lambda a, b: a @ b, a, b) == 2 * 8 * 5 * 3


def test_matmul_flops_through_grad_and_scan():
    w, x = jnp.ones((4, 6)), jnp.ones((10, 4))
    loss = lambda w, x: jnp.sum(x @ w)  # noqa: E731
    # Forward x@w, backward x^T @ g for dW: two [10,4]x[4,6]-sized products.
    assert flops.matmul_flops(jax.grad(loss), w, x) == 2 * (2 * 10 * 4 * 6)

    def scanned(w, xs):
        return jax.lax.scan(lambda c, x: (c + jnp.sum(x @ w), None), 0.0, xs)[0]

    assert flops.matmul_flops(scanned, w, jnp.ones((7, 10, 4))) == 7 * 2 * 10 * 4 * 6


def test_learner_benchmark_reports_consistent_figures(tmp_path):
    out = tmp_path / "learner.json"
    args = ["learner", "--agent=mog", "--batch=8", "--obs_dim=4", "--act_dim=2",
            "--steps_per_call=1,2", "--rounds=1", "--min_steps=2", f"--out={out}"]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert [r["steps_per_call"] for r in result["results"]] == [1, 2]
    for r in result["results"]:
        assert r["finite_metrics"] and r["matmul_gflop_per_step"] > 0
        assert r["achieved_gflop_per_s"] == pytest.approx(r["matmul_gflop_per_step"] * r["sgd_steps_per_s"])
        assert r["fraction_of_matmul_peak"] == pytest.approx(r["achieved_gflop_per_s"] / result["matmul_gflop_per_s"])
    # k steps per call do the same work per step as one.
    one, two = result["results"]
    assert one["matmul_gflop_per_step"] == pytest.approx(two["matmul_gflop_per_step"], rel=1e-6)
