"""FLOP counts of jitted functions, and this machine's dense-matmul FLOP/s."""

import statistics
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


def matmul_flops(fn, *args) -> int:
    """FLOPs of the matrix multiplications and convolutions in fn(*args), counted from its jaxpr.

    2 * output size * contracted size for every dot_general and conv_general_dilated, through nested jaxprs
    (jit, grad, scan: scan bodies are counted once per iteration). XLA's own cost
    analysis misses the dots that the CPU backend hands to its matmul library, so
    this count is the one that holds on every backend.
    """
    return _count(jax.make_jaxpr(fn)(*args).jaxpr)


def _count(jaxpr, multiplier: int = 1) -> int:
    total = 0
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general":
            (lhs_contract, _), _ = equation.params["dimension_numbers"]
            lhs_shape = equation.invars[0].aval.shape
            contracted = int(np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.int64))
            output = int(np.prod(equation.outvars[0].aval.shape, dtype=np.int64))
            total += 2 * output * contracted * multiplier
        elif equation.primitive.name == "conv_general_dilated":
            # Each output element sums over the kernel's input features and window (its own
            # gradients are convolutions too, counted the same way; padding taps included).
            rhs_spec = equation.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
            rhs_shape = equation.invars[1].aval.shape
            contracted = int(np.prod([rhs_shape[d] for d in rhs_spec[1:]], dtype=np.int64))
            output = int(np.prod(equation.outvars[0].aval.shape, dtype=np.int64))
            total += 2 * output * contracted * multiplier
        inner_multiplier = multiplier * (equation.params["length"] if equation.primitive.name == "scan" else 1)
        for value in equation.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    total += _count(inner if hasattr(inner, "eqns") else inner.jaxpr, inner_multiplier)
                elif hasattr(sub, "eqns"):
                    total += _count(sub, inner_multiplier)
    return total


def xla_flops(compiled) -> Optional[float]:
    """XLA's cost-analysis FLOPs of a compiled function (a list in older JAX, a dict in newer)."""
    analysis: Any = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def measure_matmul_flops_per_s(size: int = 2048, repeats: int = 7) -> float:
    """Median FLOP/s of a jitted float32 [size, size] @ [size, size] on the default device."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)
