"""Test configuration: pin JAX to the CPU and render headless, before anything imports JAX."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One test session serves every test, so the XLA flags are chosen once, before JAX starts:
# 8 emulated CPU devices for the sharding tests, and XLA's CPU fusion emitters off. The planner
# sets that per function anyway (jflow.runtime.planning_jit; tests/test_runtime.py checks it in a
# process without the flag), but this suite's small models also train faster with it: three
# UNet and training tests took 161 s with it and 185 s without, each from a cold cache.
_flags = os.environ.get("XLA_FLAGS", "")
for _flag in ("--xla_force_host_platform_device_count=8", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in _flags:
        _flags = f"{_flags} {_flag}".strip()
os.environ["XLA_FLAGS"] = _flags
# A persistent compilation cache shared by the test process and the subprocesses it starts
# (the kill-and-resume test), kept in the checkout so that repeated local runs start warm.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jax-tests")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real episodes and videos in ../shared/data; tests skip when a clone lacks them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real test data not found at {SHARED_DATA} (only present beside the dev checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="module")
def float64():
    """Run a test module with JAX's 64-bit mode on, and off again after it (as jaxlie tests)."""
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def train_tiny_run():
    """``train_tiny_run(data, out, text_encoder) -> out``: a 2-step run of the tiny model
    (batch 2, one device, fast compile), the smallest run that has a checkpoint to load."""

    def run(data: Path, out: Path, text_encoder) -> Path:
        from jflow.training.config import TrainConfig
        from jflow.training.trainer import train

        train(
            TrainConfig(
                data=data,
                out=out,
                model="tiny",
                steps=2,
                batch_size=2,
                warmup_steps=1,
                log_every=1,
                checkpoint_every=2,
                devices=1,
                progress=False,
                fast_compile=True,
            ),
            text_encoder=text_encoder,
        )
        return out

    return run
