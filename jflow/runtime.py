"""Process-level settings that must be made before JAX or MuJoCo's renderer start.

XLA reads ``XLA_FLAGS`` once, when JAX initialises its backend, so entry points choose flags
before the first JAX computation. Measured on the 2-core CPU machine (docs/benchmarks.md):
``--xla_cpu_use_fusion_emitters=false`` makes MJX batch-100 forward kinematics 2.5 s -> 0.4 ms
and a jaxopt Levenberg-Marquardt solve 237 -> 102 ms, but a small conv+attention train step
about 20% slower. So planning entry points turn the fusion emitters off and training entry
points leave them on.
"""

from __future__ import annotations

import os
import sys

FUSION_EMITTERS_OFF = "--xla_cpu_use_fusion_emitters=false"


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


def configure_for_planning() -> bool:
    """Settings for planning and MJX work: fusion emitters off (see the module docstring)."""
    configure_rendering()
    return add_xla_flag(FUSION_EMITTERS_OFF)
