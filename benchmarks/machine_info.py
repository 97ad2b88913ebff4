"""The machine line every benchmark prints and docs/benchmarks.md quotes."""

from __future__ import annotations

import os
import platform
import subprocess


def machine() -> str:
    """CPU model, core count and JAX backend (imports JAX: call after choosing XLA flags)."""
    import jax

    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.devices()[0].platform}"
