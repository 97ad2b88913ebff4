"""A small nonlinear least-squares interface, so the planner does not depend on one library.

Every optimiser in :mod:`jflow.planning` minimises ``0.5 * |r(x, *args)|^2`` for a residual
function ``r`` of a pytree ``x`` and differentiable arguments ``args``. They call it through
:func:`make_solver`, which returns a :class:`LeastSquaresSolver`: a function
``solve(residual_fn, init_params, *args, jac_fn=None) -> SolveResult``; ``jac_fn(x, *args)``
optionally gives the residual Jacobian ``[R, size(x)]`` (with respect to the flattened ``x``)
when its structure makes it cheaper than ``jax.jacfwd``.

Today the implementation is jaxopt's ``LevenbergMarquardt`` (or ``GaussNewton``). jaxopt has been
unmaintained since 2025-04; replacing it (e.g. by optimistix's ``LevenbergMarquardt`` with
``optx.ImplicitAdjoint``) only touches this module.

**Implicit differentiation.** With ``SolverConfig.implicit_diff`` the returned ``params`` are
differentiable with respect to ``args`` through the optimality condition
``grad_x 0.5 |r|^2 = 0`` (the implicit function theorem), not by unrolling the iterations; the linear system with the
cost's Hessian is solved densely (LU: the problems here have at most a few hundred variables,
and jaxopt's default conjugate gradients left 10% errors on them):
``jax.grad`` of a downstream loss reaches every array in ``args`` (e.g. the predicted flow and the
cost weights). Gradients with respect to ``init_params`` are zero. The solution must be a
(local) minimum the solver actually reached, so tests compare with finite differences.

The solve is a ``lax.while_loop``: it jits and vmaps (a batch of problems runs in one call; under
``vmap`` every problem runs until the slowest has converged).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, Protocol

import jax.numpy as jnp
import jax_dataclasses as jdc
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from jflow.errors import ConfigError

METHODS = ("levenberg_marquardt", "gauss_newton")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Settings of the least-squares solver (hashable: usable as a static jit argument)."""

    method: Literal["levenberg_marquardt", "gauss_newton"] = "levenberg_marquardt"
    max_iterations: int = 15
    """Iteration cap (each iteration is one damped Gauss-Newton step). Under ``vmap`` every
    problem runs until the slowest stops, and float32 problems often stall just above
    ``tolerance`` after converging, so the cap is what bounds a batched solve's time."""
    tolerance: float = 5e-5
    """Stop when the l2 norm of the cost gradient falls below this. float32 problems of a few
    hundred residuals reach a floor near 2e-6, so smaller values only burn iterations; on the
    benchmark's trajectory problems 5e-5 stops after at most 5 iterations with the cost within
    2e-5 (relative) of the converged one (benchmarks/planner.py)."""
    damping: float = 1e-3
    """Initial Levenberg-Marquardt damping (adapted by the solver)."""
    implicit_diff: bool = True
    """Differentiate the solution by the implicit function theorem (module docs)."""

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"SolverConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not self.tolerance > 0 or not self.damping > 0:
            raise ConfigError(
                f"tolerance and damping must be positive, got {self.tolerance}, {self.damping}"
            )


@jdc.pytree_dataclass
class SolveResult:
    """The solution of one least-squares problem (fields gain batch axes under ``vmap``)."""

    params: Any
    """The minimiser, same pytree structure as ``init_params``."""
    cost: Float[Array, ""]
    """``0.5 * |r(params)|^2`` at the solution."""
    iterations: Int[Array, ""]
    """Iterations the solver ran."""


class LeastSquaresSolver(Protocol):
    """``solve(residual_fn, init_params, *args)`` minimising ``0.5 |residual_fn(x, *args)|^2``."""

    def __call__(
        self,
        residual_fn: Callable[..., Array],
        init_params: Any,
        *args: Any,
        jac_fn: Callable[..., Array] | None = None,
    ) -> SolveResult: ...


def make_solver(config: SolverConfig = SolverConfig()) -> LeastSquaresSolver:
    """The solver for ``config`` (today: jaxopt). ``residual_fn(x, *args)`` returns a flat or
    shaped array of residuals; ``x`` may be any pytree of float arrays."""
    import jaxopt  # Kept local: the only module that imports jaxopt.
    import jaxopt.linear_solve

    def solve(
        residual_fn: Callable[..., Array],
        init_params: Any,
        *args: Any,
        jac_fn: Callable[..., Array] | None = None,
    ) -> SolveResult:
        # jaxopt's materialised Jacobian needs a flat parameter vector.
        flat_init, unravel = ravel_pytree(init_params)

        def flat_residual(x, *a):
            return jnp.ravel(residual_fn(unravel(x), *a))

        flat_jac = None
        if jac_fn is not None:

            def flat_jac(x, *a):
                return jac_fn(unravel(x), *a).reshape(-1, x.shape[0])

        if config.method == "levenberg_marquardt":
            opt = jaxopt.LevenbergMarquardt(
                residual_fun=flat_residual,
                maxiter=config.max_iterations,
                damping_parameter=config.damping,
                tol=config.tolerance,
                solver="cholesky",
                materialize_jac=True,
                implicit_diff=config.implicit_diff,
                implicit_diff_solve=jaxopt.linear_solve.solve_lu,
                jit=True,
            )
            if flat_jac is not None:
                # jaxopt 0.8.5 ignores jac_fun when materialize_jac=True (its __post_init__ only
                # sets _jac_fun to jacfwd); set the private attribute it reads instead.
                opt._jac_fun = flat_jac
        else:
            opt = jaxopt.GaussNewton(
                residual_fun=flat_residual,
                maxiter=config.max_iterations,
                tol=config.tolerance,
                implicit_diff=config.implicit_diff,
                implicit_diff_solve=jaxopt.linear_solve.solve_lu,
                jit=True,
            )
        flat, state = opt.run(flat_init, *args)
        r = flat_residual(flat, *args)
        return SolveResult(
            params=unravel(flat),
            cost=0.5 * jnp.sum(r * r),
            iterations=jnp.asarray(state.iter_num, jnp.int32),
        )

    return solve


def cost_of(residual_fn: Callable[..., Array], params: Any, *args: Any) -> Float[Array, ""]:
    """``0.5 |residual_fn(params, *args)|^2``: the objective every solver here minimises."""
    r = jnp.ravel(residual_fn(params, *args))
    return 0.5 * jnp.sum(r * r)


__all__ = ["LeastSquaresSolver", "SolveResult", "SolverConfig", "cost_of", "make_solver"]
