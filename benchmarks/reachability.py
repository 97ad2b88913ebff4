"""Benchmark: batched MJX reachability IK against a per-candidate MuJoCo C-API IK loop.

Both run the same damped-least-squares algorithm (jflow.planning.reachability) on the same
1000 candidate end-effector poses (FK of random in-limit configurations, positions jittered by
15 cm, so that some are out of reach), from the same seeds, for the same number of iterations.
Reports wall time of each (MJX after compilation; compile time separately) and the agreement of
the reachable / unreachable decisions.

    python benchmarks/reachability.py [--count 1000]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time

from jflow.runtime import configure_for_planning

configure_for_planning()  # before JAX starts: MJX on CPU needs the fusion emitters off

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlie  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from jflow.planning.reachability import IKConfig, PandaReachability, mujoco_reference_ik  # noqa: E402
from jflow.robots import panda  # noqa: E402


def candidates(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    model = panda.load_panda_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    pos, rot = np.zeros((count, 3)), np.zeros((count, 3, 3))
    for i in range(count):
        data.qpos[:7] = rng.uniform(panda.JOINT_LOWER, panda.JOINT_UPPER)
        mujoco.mj_kinematics(model, data)
        pos[i] = data.site(panda.EE_SITE).xpos + rng.normal(scale=0.15, size=3)
        rot[i] = data.site(panda.EE_SITE).xmat.reshape(3, 3)
    return pos, rot


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=IKConfig().iterations)
    parser.add_argument("--seeds", type=int, default=IKConfig().num_seeds)
    args = parser.parse_args()
    config = IKConfig(iterations=args.iterations, num_seeds=args.seeds)
    pos, rot = candidates(args.count)
    poses = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(jnp.asarray(rot, jnp.float32)), jnp.asarray(pos, jnp.float32)
    )
    checker = PandaReachability(config)
    t0 = time.perf_counter()
    jax.block_until_ready(checker(poses))
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        out = jax.block_until_ready(checker(poses))
        runs.append(time.perf_counter() - t0)
    mjx_s = float(np.median(runs))
    t0 = time.perf_counter()
    _, _, _, ref_reach = mujoco_reference_ik(pos, rot, config, checker.mj_model)
    capi_s = time.perf_counter() - t0
    reach = np.asarray(out.reachable)
    agree = float(np.mean(reach == ref_reach))
    print(f"machine: {cpu_model()}, {jax.devices()[0].platform} ({len(jax.devices())} device)")
    print(f"candidates: {args.count}, iterations: {config.iterations}, seeds: {config.num_seeds}")
    print(f"reachable: mjx {reach.mean():.3f}, c-api {ref_reach.mean():.3f}; agreement {agree:.4f}")
    print(
        f"mjx batched: {mjx_s * 1e3:.1f} ms (median of 5; first call incl. compile {compile_s:.1f} s)"
    )
    print(f"c-api loop:  {capi_s * 1e3:.1f} ms")
    print(f"speed-up:    {capi_s / mjx_s:.1f}x")


if __name__ == "__main__":
    main()
