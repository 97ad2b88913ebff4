"""A small nonlinear least-squares interface, so the planner does not depend on one library.

Every optimiser in :mod:`jflow.planning` minimises ``0.5 * |r(x, *args)|^2`` for a residual
function ``r`` of a pytree ``x`` and differentiable arguments ``args``. They call it through
:func:`make_solver`, which returns a :class:`LeastSquaresSolver`:
``solve(residual_fn, init_params, *args, jac_fn=None, normal_fn=None) -> SolveResult``.
The linearisation comes from, in order of preference:

* ``normal_fn(x, *args) -> NormalEquations(jtj, jtr, cost)``: the Gauss-Newton normal matrix
  ``J^T J`` ``[n, n]``, the gradient ``J^T r`` ``[n]`` (``n = size(x)``, flattened as
  ``jax.flatten_util.ravel_pytree`` flattens ``x``) and the cost, assembled by the problem from
  its structure (block-diagonal steps, banded smoothness) without a dense ``J``;
* ``jac_fn(x, *args)``: the dense residual Jacobian ``[R, n]``;
* else ``jax.jacfwd`` of the residual.

**The algorithm** is Levenberg-Marquardt as in Madsen, Nielsen and Tingleff, *Methods for
non-linear least squares problems* (2004), section 3.2: the step solves
``(J^T J + mu I) h = -J^T r`` by Cholesky; it is accepted when the cost drops, and
``mu`` shrinks by ``max(1/3, 1 - (2 rho - 1)^3)`` (``rho``: actual over predicted decrease) or
grows by a doubling factor. One linearisation per iteration: the candidate's normal equations
give its cost, and are kept when it is accepted. Stops when ``|J^T r| < tolerance``, when an
accepted step lowers the cost by less than ``relative_tolerance`` of it, or after
``max_iterations``. The loop is a ``lax.while_loop``: it jits and vmaps (under ``vmap`` every
problem runs until the slowest stops; finished problems keep their solution).

**Implicit differentiation.** With ``SolverConfig.implicit_diff`` the returned ``params`` are
differentiable with respect to ``args`` through the optimality condition
``grad_x 0.5 |r|^2 = 0`` (the implicit function theorem, a ``jax.custom_vjp``), not by
unrolling the iterations; the linear system with the cost's Hessian (from autodiff of
``residual_fn``) is solved densely by LU (conjugate gradients left 10% errors on these
problems): ``jax.grad`` of a downstream loss reaches every array in ``args`` (e.g. the predicted
flow and the cost weights). Gradients with respect to ``init_params`` are zero. The solution
must be a (local) minimum the solver actually reached, so tests compare with finite
differences. jaxopt (unmaintained since 2025-04) is the other backend
(``SolverConfig(backend="jaxopt")``), and an optimistix one would plug in the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from jflow.errors import ConfigError, UnknownNameError

SOLVER_BACKENDS = ("jflow", "jaxopt")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """Settings of the least-squares solver (hashable: usable as a static jit argument)."""

    max_iterations: int = 15
    """Iteration cap (each iteration is one damped Gauss-Newton step). Under ``vmap`` every
    problem runs until the slowest stops, so the cap bounds a batched solve's time."""
    tolerance: float = 5e-5
    """Stop when the l2 norm of the cost gradient ``J^T r`` falls below this. float32 problems
    of a few hundred residuals reach a floor near 2e-6, so smaller values only burn
    iterations."""
    relative_tolerance: float = 1e-6
    """Stop when an accepted step lowers the cost by less than this fraction of it."""
    damping: float = 1e-5
    """Initial Levenberg-Marquardt damping, relative to the largest diagonal entry of
    ``J^T J`` (adapted by the solver). The planner's problems are nearly quadratic near the
    start: 1e-5 takes the 64 benchmark trajectories to SLSQP's cost in at most 3 float32
    iterations, where 1e-3 needed 5 and stopped 1e-5 (relative) above it."""
    implicit_diff: bool = True
    """Differentiate the solution by the implicit function theorem (module docs)."""
    backend: str = "jflow"
    """``"jflow"``: the Levenberg-Marquardt of this module (uses a problem's structured normal
    equations); ``"jaxopt"``: ``jaxopt.LevenbergMarquardt`` on the dense Jacobian (implicit
    differentiation by jaxopt; ``normal_fn`` is not used). Both minimise the same cost
    (tests/test_planning_trajectory.py compares them)."""

    def __post_init__(self):
        if self.backend not in SOLVER_BACKENDS:
            raise UnknownNameError("least-squares backend", self.backend, SOLVER_BACKENDS)
        if self.max_iterations < 1:
            raise ConfigError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not (self.tolerance > 0 and self.damping > 0 and self.relative_tolerance >= 0):
            raise ConfigError(
                "tolerance and damping must be positive and relative_tolerance >= 0, got "
                f"{self.tolerance}, {self.damping}, {self.relative_tolerance}"
            )


class NormalEquations(NamedTuple):
    """The Gauss-Newton linearisation at one point: ``J^T J``, ``J^T r`` and ``0.5 |r|^2``."""

    jtj: Float[Array, "n n"]
    jtr: Float[Array, " n"]
    cost: Float[Array, ""]


@jdc.pytree_dataclass
class SolveResult:
    """The solution of one least-squares problem (fields gain batch axes under ``vmap``)."""

    params: Any
    """The minimiser, same pytree structure as ``init_params``."""
    cost: Float[Array, ""]
    """``0.5 * |r(params)|^2`` at the solution (not differentiated: use :func:`cost_of`)."""
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
        normal_fn: Callable[..., NormalEquations] | None = None,
    ) -> SolveResult: ...


def _levenberg_marquardt(
    linearize: Callable[[Array], NormalEquations], x0: Array, config: SolverConfig
) -> tuple[Array, Array, Array]:
    """Minimise from ``x0`` (flat); returns ``(x, cost, iterations)`` (module docs).

    The loop's first pass linearises at ``x0`` (a zero step, always accepted), so the compiled
    program holds one copy of ``linearize``: it can be large (MJX kinematics)."""
    n = x0.shape[0]
    dtype = x0.dtype
    eye = jnp.eye(n, dtype=dtype)
    zero = NormalEquations(
        jnp.zeros((n, n), dtype), jnp.zeros((n,), dtype), jnp.asarray(jnp.inf, dtype)
    )
    # (pass, x, linearisation at x, step to try, mu, nu, done)
    state0 = (
        jnp.asarray(0, jnp.int32),
        x0,
        zero,
        jnp.zeros_like(x0),
        jnp.asarray(0.0, dtype),
        jnp.asarray(2.0, dtype),
        jnp.asarray(False),
    )

    def cond(state):
        it, *_, done = state
        return (~done) & (it <= config.max_iterations)

    def body(state):
        it, x, cur, h, mu, nu, _ = state
        first = it == 0
        cand = jax.tree.map(lambda a: a.astype(dtype), linearize(x + h))
        predicted = 0.5 * jnp.dot(h, mu * h - cur.jtr)
        gain = (cur.cost - cand.cost) / jnp.maximum(predicted, 1e-30)
        ok = first | (jnp.isfinite(cand.cost) & (cand.cost < cur.cost))
        new = jax.tree.map(lambda c, o: jnp.where(ok, c, o), cand, cur)
        x = jnp.where(ok, x + h, x)
        mu = jnp.where(
            first,
            config.damping * jnp.max(jnp.diagonal(cand.jtj)),
            jnp.where(ok, mu * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3), mu * nu),
        )
        nu = jnp.where(ok, 2.0, 2.0 * nu)
        small_gain = ok & ~first & (cur.cost - cand.cost <= config.relative_tolerance * cur.cost)
        done = (jnp.linalg.norm(new.jtr) < config.tolerance) | small_gain | ~jnp.isfinite(mu)
        # The next step, from the (possibly new) linearisation.
        chol = jnp.linalg.cholesky(new.jtj + jnp.maximum(mu, 1e-12) * eye)
        y = jax.scipy.linalg.solve_triangular(chol, -new.jtr, lower=True)
        h = jax.scipy.linalg.solve_triangular(chol.T, y, lower=False)
        h = jnp.where(jnp.all(jnp.isfinite(h)), h, 0.0)
        return it + 1, x, new, h, mu, nu, done

    it, x, lin, *_ = jax.lax.while_loop(cond, body, state0)
    return x, lin.cost, jnp.maximum(it - 1, 0)


def _implicit(run: Callable, flat_residual: Callable) -> Callable:
    """``run(x0, args) -> (x, cost, iterations)`` with the gradient of ``x`` with respect to
    ``args`` from the implicit function theorem at ``g(x, args) = grad_x 0.5 |r|^2 = 0``:
    ``dx/dargs = -H^{-1} dg/dargs`` with ``H = dg/dx`` (dense, LU). ``x0`` gets no gradient;
    ``cost`` and ``iterations`` are not differentiated."""

    def optimality(x, a):
        return jax.grad(lambda y: 0.5 * jnp.sum(flat_residual(y, *a) ** 2))(x)

    @jax.custom_vjp
    def solve(x0, a):
        return run(x0, a)

    def solve_fwd(x0, a):
        x, cost, it = run(x0, a)
        return (x, cost, it), (x, a)

    def solve_bwd(res, cotangents):
        x, a = res
        hessian = jax.jacfwd(optimality)(x, a)
        lam = jnp.linalg.solve(hessian.T, cotangents[0])
        _, vjp = jax.vjp(lambda a_: optimality(x, a_), a)
        (a_bar,) = vjp(-lam)
        return jnp.zeros_like(x), a_bar

    solve.defvjp(solve_fwd, solve_bwd)
    return solve


def make_solver(config: SolverConfig = SolverConfig()) -> LeastSquaresSolver:
    """The Levenberg-Marquardt solver for ``config`` (module docs). ``residual_fn(x, *args)``
    returns a flat or shaped array of residuals; ``x`` may be any pytree of float arrays."""
    if config.backend == "jaxopt":
        return _jaxopt_solver(config)

    def solve(
        residual_fn: Callable[..., Array],
        init_params: Any,
        *args: Any,
        jac_fn: Callable[..., Array] | None = None,
        normal_fn: Callable[..., NormalEquations] | None = None,
    ) -> SolveResult:
        flat_init, unravel = ravel_pytree(init_params)

        def flat_residual(x, *a):
            return jnp.ravel(residual_fn(unravel(x), *a))

        def linearization(*a):
            if normal_fn is not None:
                return lambda x: NormalEquations(*normal_fn(unravel(x), *a))

            def from_jacobian(x):
                r = flat_residual(x, *a)
                if jac_fn is not None:
                    jac = jac_fn(unravel(x), *a).reshape(r.shape[0], x.shape[0])
                else:
                    jac = jax.jacfwd(flat_residual)(x, *a)
                return NormalEquations(jac.T @ jac, jac.T @ r, 0.5 * jnp.dot(r, r))

            return from_jacobian

        def run(x0, a):
            return _levenberg_marquardt(linearization(*a), x0, config)

        if config.implicit_diff:
            run = _implicit(run, flat_residual)
        flat, cost, iterations = run(flat_init, tuple(args))
        return SolveResult(
            params=unravel(flat), cost=jax.lax.stop_gradient(cost), iterations=iterations
        )

    return solve


def _jaxopt_solver(config: SolverConfig) -> LeastSquaresSolver:
    """``jaxopt.LevenbergMarquardt`` behind the same interface (jaxopt is unmaintained since
    2025-04; this module is the only one that imports it)."""
    import jaxopt
    import jaxopt.linear_solve

    def solve(
        residual_fn: Callable[..., Array],
        init_params: Any,
        *args: Any,
        jac_fn: Callable[..., Array] | None = None,
        normal_fn: Callable[..., NormalEquations] | None = None,
    ) -> SolveResult:
        del normal_fn  # jaxopt linearises through the (dense) Jacobian.
        flat_init, unravel = ravel_pytree(init_params)

        def flat_residual(x, *a):
            return jnp.ravel(residual_fn(unravel(x), *a))

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
        if jac_fn is not None:
            # jaxopt 0.8.5 ignores jac_fun when materialize_jac=True (its __post_init__ sets
            # _jac_fun to jacfwd); set the attribute it reads instead.
            opt._jac_fun = lambda x, *a: jac_fn(unravel(x), *a).reshape(-1, x.shape[0])
        flat, state = opt.run(flat_init, *args)
        r = flat_residual(flat, *args)
        return SolveResult(
            params=unravel(flat),
            cost=jax.lax.stop_gradient(0.5 * jnp.sum(r * r)),
            iterations=jnp.asarray(state.iter_num, jnp.int32),
        )

    return solve


def cost_of(residual_fn: Callable[..., Array], params: Any, *args: Any) -> Float[Array, ""]:
    """``0.5 |residual_fn(params, *args)|^2``: the objective every solver here minimises."""
    r = jnp.ravel(residual_fn(params, *args))
    return 0.5 * jnp.sum(r * r)


__all__ = [
    "LeastSquaresSolver",
    "NormalEquations",
    "SolveResult",
    "SOLVER_BACKENDS",
    "SolverConfig",
    "cost_of",
    "make_solver",
]
