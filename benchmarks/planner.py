"""Benchmark: the batched jaxopt Levenberg-Marquardt trajectory optimiser against scipy SLSQP.

Same 64 problems (synthetic rigid flows: door hinge, slide, lift-and-carry; T frames, N points,
K keypoints), same objective (jflow.planning.trajectory.trajectory_residuals, cost
0.5 |r|^2 with Dream2Flow's weights), same start (the grasp held still: ``init="hold"``, the
paper's "initial guess is the current end-effector pose"). SLSQP (the solver of the
ReKep / 3DFlowAction line of work) gets the exact gradient from a jitted ``jax.value_and_grad``,
one problem at a time; the optimiser here solves all 64 in one jitted, vmapped call.

    python benchmarks/planner.py [--problems 64]
"""

from __future__ import annotations

import argparse
import time

from jflow.runtime import configure_for_planning

configure_for_planning()  # before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

from jflow.planning.synthetic import MOTIONS, synthetic_rigid_flow  # noqa: E402
from jflow.planning.trajectory import (  # noqa: E402
    CostWeights,
    TrajectoryConfig,
    base_poses,
    batched_trajectory_solver,
    make_problem,
    trajectory_residuals,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--keypoints", type=int, default=16)
    args = parser.parse_args()
    config = TrajectoryConfig(num_keypoints=args.keypoints, init="hold")
    weights = CostWeights.default()
    problems = []
    for i in range(args.problems):
        flow, grasp, _ = synthetic_rigid_flow(
            MOTIONS[i % 3], num_frames=args.frames, num_points=args.points, seed=i, occlusion=0.1
        )
        problems.append(make_problem(flow, grasp, config))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *problems)

    solve = batched_trajectory_solver(config)
    t0 = time.perf_counter()
    jax.block_until_ready(solve(stacked, weights))
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = jax.block_until_ready(solve(stacked, weights))
        runs.append(time.perf_counter() - t0)
    lm_s = float(np.median(runs))
    lm_cost = np.asarray(out.cost, np.float64)

    # SLSQP on the same objective, one problem at a time, exact jitted gradients.
    def objective(x, problem, base):
        d = x.reshape(args.frames - 1, 6)
        r = trajectory_residuals(d, problem, base, weights, config.rotation_scale)
        return 0.5 * jnp.sum(r * r)

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    bases = [base_poses(p, config.init) for p in problems]
    x0 = np.zeros((args.frames - 1) * 6)
    jax.block_until_ready(value_and_grad(jnp.asarray(x0, jnp.float32), problems[0], bases[0]))

    slsqp_cost = np.zeros(args.problems)
    evaluations = 0
    t0 = time.perf_counter()
    for i, (problem, base) in enumerate(zip(problems, bases, strict=True)):

        def fun(x, problem=problem, base=base):
            v, g = value_and_grad(jnp.asarray(x, jnp.float32), problem, base)
            return float(v), np.asarray(g, np.float64)

        res = scipy.optimize.minimize(
            fun, x0, jac=True, method="SLSQP", options={"maxiter": 200, "ftol": 1e-12}
        )
        slsqp_cost[i] = res.fun
        evaluations += res.nfev
    slsqp_s = time.perf_counter() - t0

    print(
        f"problems: {args.problems} (T={args.frames}, N={args.points}, K={args.keypoints}), init=hold"
    )
    print(
        f"jaxopt LM, one vmapped call: {lm_s * 1e3:.1f} ms (median of 3; first call incl. compile {compile_s:.1f} s)"
    )
    print(
        f"scipy SLSQP, loop:           {slsqp_s * 1e3:.1f} ms ({evaluations} objective+gradient evaluations)"
    )
    print(f"speed-up:                    {slsqp_s / lm_s:.1f}x")
    print(
        f"final cost: LM mean {lm_cost.mean():.6e} median {np.median(lm_cost):.6e}; "
        f"SLSQP mean {slsqp_cost.mean():.6e} median {np.median(slsqp_cost):.6e}"
    )
    print(
        f"LM iterations: max {int(np.max(out.iterations))}, mean {float(np.mean(out.iterations)):.1f}"
    )
    print(
        f"final cost mean ratio LM / SLSQP: {lm_cost.mean() / slsqp_cost.mean():.6f}; "
        f"LM cost <= SLSQP cost (1e-4 relative) on {np.mean(lm_cost <= slsqp_cost * (1 + 1e-4)):.0%} of problems; "
        f"mean keypoint error LM {float(np.mean(out.keypoint_error)) * 1e3:.2f} mm"
    )


if __name__ == "__main__":
    main()
