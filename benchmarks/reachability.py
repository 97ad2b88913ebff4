"""Benchmark: batched MJX reachability IK against a per-candidate MuJoCo C-API IK loop.

Both run the same damped-least-squares algorithm (jflow.planning.reachability) on the same
1000 candidate end-effector poses (FK of random in-limit configurations, positions jittered by
15 cm, so that some are out of reach), on the same arm-only Panda model, from the same seeds.
The MJX side solves all candidates (and all seeds) in one jitted, vmapped call with a fixed
number of iterations, compiled as the library compiles it (XLA's CPU fast math,
``jflow.runtime.FAST_MATH_OPTIONS``) and, interleaved with it, with strict arithmetic. The
C-API side (``mj_kinematics``, ``mj_comPos``, ``mj_jacSite`` and a numpy DLS step per
candidate and iteration) is timed twice: step for step the same computation
(fixed iterations, every seed), and as a per-call loop would naturally run (``early_exit``:
each seed stops once the pose is reached, each candidate at the first seed that reaches it).

Both sides run on one core: the process pins itself to one CPU before JAX starts (XLA's CPU
runtime otherwise runs independent kernels of the batched call on a second core), and numpy's
BLAS threads and XLA's Eigen threads are off. Times are wall-clock after compilation (reported
separately); the machine is shared, so each side is timed several times, interleaved, and the
minimum is reported (with the median and the process CPU time, the load-independent figure).
Agreement: the fraction of candidates both call reachable or both call unreachable.

    python benchmarks/reachability.py [--count 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per side (module docs)
CORE = max(os.sched_getaffinity(0))
os.sched_setaffinity(0, {CORE})  # before JAX starts its threads: they inherit the one core

from machine_info import machine  # noqa: E402  (benchmarks/, the script's folder)

from jflow.runtime import add_xla_flag, configure_for_planning  # noqa: E402

add_xla_flag("--xla_cpu_multi_thread_eigen=false")
configure_for_planning()  # before JAX starts: MJX on CPU needs the fusion emitters off

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlie  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from jflow.planning.reachability import IKConfig, PandaReachability, mujoco_reference_ik  # noqa: E402
from jflow.robots import panda  # noqa: E402


def candidates(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Site poses of random in-limit configurations, positions jittered by 15 cm."""
    model = panda.load_arm_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    pos, rot = np.zeros((count, 3)), np.zeros((count, 3, 3))
    for i in range(count):
        data.qpos[:] = rng.uniform(panda.JOINT_LOWER, panda.JOINT_UPPER)
        mujoco.mj_kinematics(model, data)
        pos[i] = data.site(panda.EE_SITE).xpos + rng.normal(scale=0.15, size=3)
        rot[i] = data.site(panda.EE_SITE).xmat.reshape(3, 3)
    return pos, rot


def timed(fn, box: dict, key: str) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``fn()``; its result goes to ``box[key]``."""
    w0, c0 = time.perf_counter(), time.process_time()
    box[key] = fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=IKConfig().iterations)
    parser.add_argument("--seeds", type=int, default=IKConfig().num_seeds)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"machine: {machine()}; pinned to CPU {CORE}; load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )
    config = IKConfig(iterations=args.iterations, num_seeds=args.seeds)
    pos, rot = candidates(args.count)
    poses = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(jnp.asarray(rot, jnp.float32)), jnp.asarray(pos, jnp.float32)
    )
    checker = PandaReachability(config)
    strict = PandaReachability(config, fast_math=False)
    box: dict = {}
    compile_s, _ = timed(lambda: jax.block_until_ready(checker(poses)), box, "mjx")
    timed(lambda: jax.block_until_ready(strict(poses)), box, "mjx_strict")
    sides = {
        "mjx": lambda: jax.block_until_ready(checker(poses)),
        "mjx_strict": lambda: jax.block_until_ready(strict(poses)),
        "capi": lambda: mujoco_reference_ik(pos, rot, config, checker.mj_model),
        "capi_early": lambda: mujoco_reference_ik(
            pos, rot, config, checker.mj_model, early_exit=True
        ),
    }
    runs: dict[str, list] = {k: [] for k in sides}
    for _ in range(args.repeats):  # interleaved, so that load spikes hit every side
        for _ in range(3):
            runs["mjx"].append(timed(sides["mjx"], box, "mjx"))
            runs["mjx_strict"].append(timed(sides["mjx_strict"], box, "mjx_strict"))
        runs["capi"].append(timed(sides["capi"], box, "capi"))
        runs["capi_early"].append(timed(sides["capi_early"], box, "capi_early"))
    reach = np.asarray(box["mjx"].reachable)
    wall = {k: np.array([w for w, _ in v]) for k, v in runs.items()}
    cpu = {k: np.array([c for _, c in v]) for k, v in runs.items()}
    print(
        f"candidates: {args.count} (padded to a power of two), iterations: "
        f"{config.iterations}, seeds: {config.num_seeds}; model: arm-only Panda "
        f"({checker.mj_model.nbody} bodies, {checker.mj_model.njnt} joints)"
    )
    print(f"MJX batched: compile {compile_s:.1f} s (first call)")
    labels = {
        "mjx": "MJX batched, one call",
        "mjx_strict": "MJX, strict arithmetic",
        "capi": "C-API loop, same steps",
        "capi_early": "C-API loop, early exit",
    }
    for key, label in labels.items():
        decision = np.asarray(box[key].reachable) if key.startswith("mjx") else box[key][3]
        print(
            f"{label:24s} min {wall[key].min() * 1e3:8.1f} ms, median "
            f"{np.median(wall[key]) * 1e3:8.1f} ms of {wall[key].size} (CPU "
            f"{cpu[key].min() * 1e3:8.1f} ms); reachable {decision.mean():.3f}; agreement "
            f"with MJX {np.mean(decision == reach):.4f}"
        )
    print(
        f"fast math vs strict arithmetic: {cpu['mjx'].min() / cpu['mjx_strict'].min():.2f}x "
        "the CPU time"
    )
    for base in ("mjx", "mjx_strict"):
        for key in ("capi", "capi_early"):
            print(
                f"{labels[base]} vs {labels[key]}: "
                f"{wall[key].min() / wall[base].min():.1f}x (min wall), "
                f"{np.median(wall[key]) / np.median(wall[base]):.1f}x (median wall), "
                f"{cpu[key].min() / cpu[base].min():.1f}x (CPU time)"
            )
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
