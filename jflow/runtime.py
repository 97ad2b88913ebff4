"""Settings that must be made before JAX or MuJoCo's renderer start, and per-function XLA options.

XLA reads ``XLA_FLAGS`` once, when JAX initialises its backend. Measured on the 2-core CPU
machine (docs/benchmarks.md): ``--xla_cpu_use_fusion_emitters=false`` makes MJX batch-100
forward kinematics 2.5 s -> 0.4 ms and a jaxopt Levenberg-Marquardt solve 237 -> 102 ms, but a
small conv+attention train step about 20% slower. Planning needs the fusion emitters off and
training wants them on, often in one process (a notebook, ``jflow demo``).

So the setting is made per compiled function: :func:`planning_jit` passes
:data:`PLANNING_COMPILER_OPTIONS` to ``jax.jit`` as ``compiler_options`` when it compiles for
the CPU. jflow's planning functions are built with it and run at speed whatever ``XLA_FLAGS``
the process started with; everything else keeps XLA's default. :func:`configure_for_planning`
still sets the process-wide flag, for code that jits MJX kinematics with a plain ``jax.jit``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"
PLANNING_COMPILER_OPTIONS: dict[str, bool] = {"xla_cpu_use_fusion_emitters": False}
""":data:`FUSION_EMITTERS_OFF` as a per-function XLA compile option (``jax.jit(...,
compiler_options=...)``): MJX kinematics and the least-squares solves need it on CPU."""
FAST_MATH_OPTIONS: dict[str, bool] = {
    "xla_cpu_enable_fast_math": True,
    "xla_cpu_fast_math_honor_nans": True,
    "xla_cpu_fast_math_honor_infs": True,
    "xla_cpu_fast_math_honor_division": True,
    "xla_cpu_fast_math_honor_functions": True,
}
"""XLA's CPU fast math, with its switches for NaN, Inf, division and library functions left
on: the compiler may reassociate and contract (fused multiply-add) floating-point arithmetic.
``isnan``/``isinf`` still classify, and a NaN still propagates through sums, products and
norms, but algebraic identities may be applied to it (``x - x`` and ``x * 0`` compile to 0 for
a NaN ``x``), so a function compiled with it must check its inputs first. Only the batched IK of
``jflow.planning.reachability`` uses it (11 to 14% less CPU per solve, the same
reachable/unreachable decisions; docs/benchmarks.md), and it refuses non-finite poses before
the solve; the trajectory optimisers keep strict arithmetic."""


def configure_rendering() -> None:
    """Render headless through EGL unless the user chose a GL backend."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def add_xla_flag(flag: str) -> bool:
    """Append ``flag`` to ``XLA_FLAGS`` if JAX has not started yet; returns whether it applies.

    A flag the user already set (same name) is left as the user set it.
    """
    name = flag.split("=", 1)[0]
    current = os.environ.get("XLA_FLAGS", "")
    if any(part.split("=", 1)[0] == name for part in current.split()):
        return flag in current.split()
    if _jax_backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()
    return True


def _jax_backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # No public API tells whether the backend has started.

    return xla_bridge.backends_are_initialized()


def planning_jit(fun: Callable, *, fast_math: bool = False, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fun, **jit_kwargs)`` with :data:`PLANNING_COMPILER_OPTIONS` (and
    :data:`FAST_MATH_OPTIONS` if ``fast_math``) when JAX's default backend is the CPU.

    The options are XLA CPU settings; other backends get the plain ``jax.jit``. The backend is
    read once, at the first call, so building a function does not start JAX."""
    import jax

    options = {**PLANNING_COMPILER_OPTIONS, **(FAST_MATH_OPTIONS if fast_math else {})}
    jitted = None

    @functools.wraps(fun)
    def call(*args, **kwargs):
        nonlocal jitted
        if jitted is None:
            on_cpu = jax.default_backend() == "cpu"
            jitted = jax.jit(fun, compiler_options=options if on_cpu else None, **jit_kwargs)
        return jitted(*args, **kwargs)

    return call


def configure_for_planning() -> bool:
    """Settings for planning and MJX work: fusion emitters off (see the module docstring)."""
    configure_rendering()
    return add_xla_flag(FUSION_EMITTERS_OFF)
