"""Benchmark: the batched Levenberg-Marquardt trajectory optimiser against scipy SLSQP.

Same 64 problems (synthetic rigid flows: door hinge, slide, lift-and-carry; T frames, N points,
K keypoints), same objective (jflow.planning.trajectory.trajectory_residuals, cost
0.5 |r|^2 with Dream2Flow's weights), same start (``--init hold``: the grasp held still, the
paper's "initial guess is the current end-effector pose"; ``--init rigid_fit``: per-frame rigid
fits of the flow). SLSQP (the solver of the ReKep / 3DFlowAction line of work) gets the exact
gradient from a jitted ``jax.value_and_grad`` in float64, one problem at a time; the optimiser
here solves all 64 in one jitted, vmapped float32 call. Both final solutions are scored with the
same float64 objective.

Both sides run on one core: numpy's BLAS threads and XLA's Eigen threads are off (for
SLSQP's small per-call programs those threads only add hand-offs: it ran 2.5x slower with them;
the batched call is single-threaded either way). Times are wall-clock, after compilation (reported separately); the machine is shared, so each
side is timed several times, interleaved, and the minimum is reported (with the median and the
process CPU time beside it).

    python benchmarks/planner.py [--problems 64] [--init hold|rigid_fit]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per side (module docs)

from machine_info import machine  # noqa: E402  (benchmarks/, the script's folder)

from jflow.runtime import add_xla_flag, configure_for_planning  # noqa: E402

add_xla_flag("--xla_cpu_multi_thread_eigen=false")
configure_for_planning()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlie  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from jflow.planning.solver import SolverConfig  # noqa: E402
from jflow.planning.synthetic import MOTIONS, synthetic_rigid_flow  # noqa: E402
from jflow.planning.trajectory import (  # noqa: E402
    CostWeights,
    TrajectoryConfig,
    base_poses,
    batched_trajectory_solver,
    make_problem,
    trajectory_residuals,
)


def timed(fn) -> tuple[float, float]:
    """Wall and process-CPU seconds of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def lm_variants(config: TrajectoryConfig) -> dict[str, tuple[TrajectoryConfig, bool]]:
    """The optimiser settings compared: the planner's default (float32, gradient tolerance
    5e-5) and a float64 solve to SLSQP's precision (tolerance 1e-8)."""
    tight = SolverConfig(max_iterations=15, tolerance=1e-8, relative_tolerance=0.0)
    return {
        "LM float32 (planner default)": (config, False),
        "LM float64 (tolerance 1e-8)": (dataclasses.replace(config, solver=tight), True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--keypoints", type=int, default=16)
    parser.add_argument("--init", choices=("hold", "rigid_fit"), default="hold")
    parser.add_argument("--repeats", type=int, default=3, help="SLSQP loops (LM: 3x as many)")
    parser.add_argument("--slsqp-ftol", type=float, default=1e-12)
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    config = TrajectoryConfig(num_keypoints=args.keypoints, init=args.init)
    problems = []
    for i in range(args.problems):
        flow, grasp, _ = synthetic_rigid_flow(
            MOTIONS[i % 3], num_frames=args.frames, num_points=args.points, seed=i, occlusion=0.1
        )
        problems.append(make_problem(flow, grasp, config))
    t1 = args.frames - 1

    with jax.enable_x64(True):
        f64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)  # noqa: E731
        weights64 = f64(CostWeights.default())
        bases = [f64(base_poses(p, config.init)) for p in problems]
        problems64 = [f64(p) for p in problems]

        def objective(x, problem, base):
            r = trajectory_residuals(
                x.reshape(t1, 6), problem, base, weights64, config.rotation_scale
            )
            return 0.5 * jnp.sum(r * r)

        value_and_grad = jax.jit(jax.value_and_grad(objective))
        cost64 = jax.jit(objective)
        x0 = np.zeros(t1 * 6)
        jax.block_until_ready(value_and_grad(jnp.asarray(x0), problems64[0], bases[0]))

        # The batched solves, one compiled function per variant (float32 or float64 inputs).
        variants = {}
        for name, (cfg, x64) in lm_variants(config).items():
            cast = f64 if x64 else (lambda tree: tree)
            stacked = cast(jax.tree.map(lambda *a: jnp.stack(a), *problems))
            weights = cast(CostWeights.default())
            solve = batched_trajectory_solver(cfg)

            def call(solve=solve, s=stacked, w=weights, x64=x64):
                with jax.enable_x64(x64):  # float32 variants are traced with x64 off
                    return jax.block_until_ready(solve(s, w))

            compile_s, _ = timed(call)
            variants[name] = {"call": call, "compile": compile_s, "out": call(), "runs": []}

        def slsqp_all():
            """SLSQP on each problem in turn; returns the final costs and the evaluations."""
            with jax.enable_x64(True):
                return slsqp_loop()

        def slsqp_loop():
            costs, evals = np.zeros(args.problems), 0
            for i, (problem, base) in enumerate(zip(problems64, bases, strict=True)):

                def fun(x, problem=problem, base=base):
                    v, g = value_and_grad(jnp.asarray(x), problem, base)
                    return float(v), np.asarray(g)

                res = scipy.optimize.minimize(
                    fun,
                    x0,
                    jac=True,
                    method="SLSQP",
                    options={"maxiter": 500, "ftol": args.slsqp_ftol},
                )
                costs[i], evals = res.fun, evals + res.nfev
            return costs, evals

        slsqp_runs, box = [], {}
        for _ in range(args.repeats):  # interleaved, so that load spikes hit both sides
            for v in variants.values():
                v["runs"] += [timed(v["call"]) for _ in range(3)]
            slsqp_runs.append(timed(lambda: box.update(r=slsqp_all())))
        slsqp_cost, evaluations = box["r"]

        def score(out) -> np.ndarray:
            """The float64 objective at an LM solution (its deltas around the bases)."""
            costs = np.zeros(args.problems)
            wxyz_xyz = np.asarray(out.ee_poses.wxyz_xyz, np.float64)
            for i in range(args.problems):
                poses = jaxlie.SE3(jnp.asarray(wxyz_xyz[i, 1:]))
                d_pos = poses.translation() - bases[i].translation()
                d_rot = (bases[i].rotation().inverse() @ poses.rotation()).log()
                x = jnp.concatenate([d_pos, d_rot], axis=-1).ravel()
                costs[i] = float(cost64(x, problems64[i], bases[i]))
            return costs

        for v in variants.values():
            v["cost"] = score(v["out"])

    sl_wall = np.array([w for w, _ in slsqp_runs])
    sl_cpu = np.array([c for _, c in slsqp_runs])
    print(
        f"problems: {args.problems} (T={args.frames}, N={args.points}, K={args.keypoints}), "
        f"init={args.init}, solved in one vmapped call per LM variant"
    )
    print(
        f"scipy SLSQP, loop (float64): min {sl_wall.min() * 1e3:.0f} ms, median "
        f"{np.median(sl_wall) * 1e3:.0f} ms of {sl_wall.size} (CPU {sl_cpu.min() * 1e3:.0f} ms); "
        f"{evaluations} value+gradient evaluations ({evaluations / args.problems:.0f} per "
        f"problem); mean final cost {slsqp_cost.mean():.7e}"
    )
    for name, v in variants.items():
        wall = np.array([w for w, _ in v["runs"]])
        cpu = np.array([c for _, c in v["runs"]])
        iters = np.asarray(v["out"].iterations)
        rel = v["cost"] / slsqp_cost - 1.0
        print(
            f"{name}: min {wall.min() * 1e3:.1f} ms, median {np.median(wall) * 1e3:.1f} ms of "
            f"{wall.size} (CPU {cpu.min() * 1e3:.1f} ms), compile {v['compile']:.1f} s; "
            f"iterations max {iters.max()}, mean {iters.mean():.2f}"
        )
        print(
            f"    speed-up {sl_wall.min() / wall.min():.0f}x (min wall), "
            f"{np.median(sl_wall) / np.median(wall):.0f}x (median wall), "
            f"{sl_cpu.min() / cpu.min():.0f}x (CPU time); mean final cost "
            f"{v['cost'].mean():.7e} (ratio to SLSQP {v['cost'].mean() / slsqp_cost.mean():.7f}); "
            f"per problem cost/SLSQP - 1: median {np.median(rel):+.1e}, max {rel.max():+.1e}, "
            f"<= SLSQP on {np.mean(rel <= 0):.0%}, <= SLSQP + 1e-6 relative on "
            f"{np.mean(rel <= 1e-6):.0%}; mean keypoint error "
            f"{float(np.mean(np.asarray(v['out'].keypoint_error))) * 1e3:.2f} mm"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
