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


def test_convolution_flops_forward_and_through_grad():
    images, kernel = jnp.ones((2, 9, 9, 4)), jnp.ones((3, 3, 4, 8))  # NHWC, HWIO
    conv = lambda k, x: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # Output [2, 4, 4, 8]; each element sums 3 x 3 x 4 products.
    forward = 2 * (2 * 4 * 4 * 8) * (3 * 3 * 4)
    assert flops.matmul_flops(conv, kernel, images) == forward
    # The kernel's gradient is one more convolution with as many products (the output
    # gradient slid over the input): twice the forward's count.
    assert flops.matmul_flops(jax.grad(lambda k, x: jnp.sum(conv(k, x))), kernel, images) == 2 * forward


# Slow (about 20 s in the suite): the device check's dry run (test_device_check) times the pixel
# learner through the same benchmark code and checks its convolutions are counted.
@pytest.mark.slow
def test_learner_benchmark_from_pixels(tmp_path):
    out = tmp_path / "learner.json"
    args = ["learner", "--agent=mpo", "--batch=4", "--pixels=16", "--frame_stack=2", "--layers=8,16", "--act_dim=1",
            "--steps_per_call=1", "--rounds=1", "--min_steps=2", f"--out={out}"]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    (r,) = result["results"]
    assert r["finite_metrics"] and result["settings"]["pixels"] == 16
    # The encoder's convolutions are counted: at least its first layer's forward pass over the batch's
    # observations (16 -> 7 pixels, 32 channels, 3 x 3 x 6 inputs each).
    assert r["matmul_gflop_per_step"] * 1e9 > 2 * 4 * 7 * 7 * 32 * (3 * 3 * 6)


def test_learner_benchmark_reports_consistent_figures(tmp_path):
    out = tmp_path / "learner.json"
    args = ["learner", "--agent=mpo", "--batch=8", "--obs_dim=4", "--act_dim=2",
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
