"""Benchmark: where the time of jflow's whole training step goes, and what two CPU devices buy.

Part 1, one process: the full jitted train step of ``jflow train`` (conditioning encoders, text
dropout, loss, backward, clipping, AdamW, EMA; :func:`jflow.training.trainer.make_train_step`)
on a synthetic batch shaped like the kitchen data (16 frames of a 16x16 grid, 128x128 RGB-D,
16 MiniLM-width text tokens), for the default :class:`~jflow.models.FlowModelConfig` and for
variants with one part removed: no motion modules on the levels, no spatial transformers on the
levels (the middle block keeps both), and one with every frame its own UNet step
(``frame_patch`` 1, the earlier default: the UNet runs on 16 frames instead of 8 frame pairs). The variants run
interleaved (one step each, round after round) so that they share the machine's load; each
reports the median wall and CPU time and XLA's FLOP count of the compiled step.

Part 2, two child processes: the default step on one CPU device against the same global batch
split over two emulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``,
data parallel with ``NamedSharding``, as ``jflow train`` does on a mesh). XLA_FLAGS is read when
JAX starts, so each setting runs in its own process, one after the other.

    python benchmarks/train_step_parts.py [--repeats 8] [--batch-size 8] [--skip-devices]

Run it alone on the machine; results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _batch(config, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t, (h, w) = config.num_frames, config.grid_hw
    flow = rng.normal(size=(batch_size, t, h, w, 4)).astype(np.float32)
    flow[..., 3] = 1.0
    return {
        "flow": flow,
        "rgb": rng.integers(0, 256, (batch_size, 128, 128, 3)).astype(np.uint8),
        "depth": rng.uniform(1.0, 2.0, (batch_size, 128, 128)).astype(np.float32),
        "text_tokens": rng.normal(size=(batch_size, 16, config.text_dim)).astype(np.float32),
        "text_mask": np.ones((batch_size, 16), bool),
    }


def _compiled_step(config, batch_size: int, devices: int):
    """``(run, flops, compile_seconds)``: ``run(step)`` does one train step and blocks."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jflow.models import FlowUNet, loss_fn
    from jflow.training.config import TrainConfig
    from jflow.training.mesh import batch_sharding, make_mesh, replicated, state_shardings
    from jflow.training.trainer import initial_state, make_optimizer, make_train_step

    train_config = TrainConfig(data="unused", batch_size=batch_size)
    graphdef, params, rest = nnx.split(FlowUNet(config, rngs=nnx.Rngs(0)), nnx.Param, ...)
    optimizer = make_optimizer(train_config)
    mesh = make_mesh(fsdp=1, devices=jax.devices()[:devices])
    state = initial_state(params, optimizer)
    shardings = state_shardings(mesh, state)
    state = jax.device_put(state, shardings)
    rest = jax.device_put(rest, replicated(mesh))
    in_batch = batch_sharding(mesh)
    batch = {k: jax.device_put(v, in_batch) for k, v in _batch(config, batch_size).items()}
    step_fn = jax.jit(
        make_train_step(graphdef, rest, optimizer, loss_fn, train_config),
        in_shardings=(shardings, in_batch, None),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
    )
    started = time.perf_counter()
    compiled = step_fn.lower(state, batch, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - started
    flops = float(compiled.cost_analysis()["flops"])
    holder = {"state": state}

    def run(step: int) -> None:
        holder["state"], metrics = compiled(holder["state"], batch, jnp.int32(step))
        jax.block_until_ready(metrics)

    run(0)  # The first call allocates; not timed.
    return run, flops, compile_s


def _time(run, step: int) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), _cpu_seconds()
    run(step)
    return time.perf_counter() - w0, _cpu_seconds() - c0


def parts(repeats: int, batch_size: int) -> list[dict]:
    from jflow.models import FlowModelConfig

    base = FlowModelConfig.default(text_dim=384)
    levels = len(base.channels)
    variants = {
        "default": base,
        "no motion modules on the levels": dataclasses.replace(
            base, motion_levels=(False,) * levels
        ),
        "no spatial transformers on the levels": dataclasses.replace(
            base, attention_levels=(False,) * levels
        ),
        "one frame per step (frame_patch 1)": dataclasses.replace(base, frame_patch=1),
    }
    runs = {}
    for name, config in variants.items():
        run, flops, compile_s = _compiled_step(config, batch_size, devices=1)
        runs[name] = {"run": run, "flops": flops, "compile_s": compile_s, "wall": [], "cpu": []}
        print(f"compiled {name}: {compile_s:.1f} s, {flops / 1e9:.2f} GFLOP", flush=True)
    for i in range(repeats):
        for entry in runs.values():
            wall, cpu = _time(entry["run"], i + 1)
            entry["wall"].append(wall)
            entry["cpu"].append(cpu)
    rows = []
    for name, entry in runs.items():
        rows.append(
            {
                "variant": name,
                "gflop": entry["flops"] / 1e9,
                "wall_ms": 1e3 * statistics.median(entry["wall"]),
                "cpu_ms": 1e3 * statistics.median(entry["cpu"]),
                "compile_s": entry["compile_s"],
            }
        )
    return rows


def child(devices: int, repeats: int, batch_size: int) -> None:
    """Time the default step on ``devices`` CPU devices; print one JSON line."""
    from jflow.models import FlowModelConfig

    run, flops, compile_s = _compiled_step(
        FlowModelConfig.default(text_dim=384), batch_size, devices
    )
    walls, cpus = zip(*(_time(run, i + 1) for i in range(repeats)), strict=True)
    print(
        json.dumps(
            {
                "devices": devices,
                "wall_ms": 1e3 * statistics.median(walls),
                "cpu_ms": 1e3 * statistics.median(cpus),
                "compile_s": compile_s,
            }
        )
    )


def device_split(repeats: int, batch_size: int) -> list[dict]:
    rows = []
    for devices in (1, 2):
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        if devices > 1:
            flags.append(f"--xla_force_host_platform_device_count={devices}")
        env["XLA_FLAGS"] = " ".join(flags)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(devices), "--repeats", str(repeats),
             "--batch-size", str(batch_size)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-devices", action="store_true")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.repeats, args.batch_size)
        return
    print(f"batch {args.batch_size}, {args.repeats} timed steps per setting (medians)")
    rows = parts(args.repeats, args.batch_size)
    base = rows[0]
    print("| train step | GFLOP (XLA) | wall | CPU | CPU vs default |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['gflop']:.1f} | {r['wall_ms']:.0f} ms | {r['cpu_ms']:.0f} ms "
            f"| {r['cpu_ms'] / base['cpu_ms']:.2f} |"
        )
    if args.skip_devices:
        return
    one, two = device_split(args.repeats, args.batch_size)
    print("| default step, global batch split over | wall | CPU | steps/s |")
    print("| --- | --- | --- | --- |")
    for r in (one, two):
        print(
            f"| {r['devices']} CPU device(s) | {r['wall_ms']:.0f} ms | {r['cpu_ms']:.0f} ms "
            f"| {1e3 / r['wall_ms']:.2f} |"
        )
    print(f"speed-up of 2 devices in wall time: {one['wall_ms'] / two['wall_ms']:.2f}x")


if __name__ == "__main__":
    main()
