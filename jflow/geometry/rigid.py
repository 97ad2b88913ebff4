"""Weighted rigid and similarity fits between corresponding 3D point sets.

The model (Kabsch / Umeyama)::

    target_i ~= scale * R @ source_i + t,      R in SO(3), t in R^3, scale > 0 (or 1)

minimising ``sum_i w_i |target_i - (scale R source_i + t)|^2`` over the points with weight
``w_i > 0``. ``R`` and ``t`` come back as one ``jaxlie.SE3`` named ``target_from_source``
(docs/conventions.md); ``scale`` is separate, so the similarity is
``apply_rigid_fit(fit, p) = scale * R @ p + t``.

The solution is the classic closed form: with ``s_bar, t_bar`` the weighted centroids and
``H = sum_i w_i (t_i - t_bar)(s_i - s_bar)^T / sum_i w_i = U S V^T``, the rotation is
``R = U diag(1, 1, d) V^T`` with ``d = sign(det U det V)``. The sign correction makes ``R`` a
proper rotation (``det R = +1``) even when the best orthogonal matrix is a reflection (a
mirrored target); ``scale = tr(diag(1, 1, d) S) / var(source)``.

**Degenerate inputs.** A fit is *valid* when

1. at least 3 points have a finite, positive weight (and finite coordinates), and
2. with ``sigma_1 >= sigma_2 >= sigma_3`` the singular values of the weighted, centred source
   points (rows ``sqrt(w_i / sum w) (s_i - s_bar)``, so ``sigma_k^2`` are the eigenvalues of
   the weighted source covariance):

   * ``sigma_2 > collinear_tol * sigma_1`` (the points are not (near-)collinear), and
   * ``sigma_1 > 100 * eps * max_i |s_i|_inf`` (they do not all coincide up to rounding).

``collinear_tol`` defaults to :data:`DEFAULT_COLLINEAR_TOL` ``= 1e-3`` in every dtype: a
point set 1 m long and less than about 1 mm across is a line, whose rotation about its own axis
no real measurement determines. Rounding alone leaves an error of a few ``eps * sigma_1 /
sigma_2`` radians about that axis (measured in float32, noise-free: about 1e-6 rad at
``sigma_2 / sigma_1 = 0.01``, 3e-5 rad at 1e-3). Planar point sets (``sigma_3 = 0``) are
fine. Only the source is tested: a collapsed target gives a valid fit with ``scale = 0``
(``with_scale``) or an arbitrary rotation, which is the least-squares answer.

An invalid fit returns the identity transform, ``scale = 1`` and the residual of the identity,
all finite; gradients through it are finite (zero through the rotation). Points with a
non-finite coordinate or weight, and negative weights, count as weight 0, so masked-out points
may hold NaN.

**Gradients.** ``jax.grad`` / ``jax.jvp`` work through every output. The rotation has a custom
JVP (the derivative of the proper polar factor), because the SVD's own derivative divides by
``s_i^2 - s_j^2`` and is NaN whenever two singular values of ``H`` are equal, which happens for
perfectly valid symmetric point sets (a cube, a regular polygon). The custom rule divides by
``s_i + s_j`` (``s_2 - s_3`` after a reflection correction), which vanishes only when the
rotation is genuinely not unique; there the ill-defined part of the derivative is set to 0.

**Batches.** Every function takes one point set ``[N, 3]``; batch with ``jax.vmap``. To fit
frame 0 of an object flow ``flow: [T, N, 3]`` with visibility ``vis: [T, N]`` to every frame::

    fits = jax.vmap(rigid_fit, in_axes=(None, 0, 0))(flow[0], flow, vis[0] & vis)
    fits.target_from_source  # SE3 batched over T: frame_t_from_frame_0
    moved = jax.vmap(apply_rigid_fit, in_axes=(0, None))(fits, flow[0])  # [T, N, 3]

Under ``jax.jit``, ``with_scale``, ``collinear_tol`` and ``iterations`` are static
(``static_argnames``); ``trim_fraction`` may be traced.

**Precision.** The matrix products use ``Precision.HIGHEST``: on recent NVIDIA GPUs JAX's default
float32 matmul rounds its inputs to TF32 (10-bit mantissa), which would cost about 1e-3 relative
accuracy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax_dataclasses as jdc
import jaxlie
import numpy as np
from jaxtyping import Array, Bool, Float

from jflow.errors import ConfigError, GeometryError, ShapeError
from jflow.geometry.transforms import transform_points

# Full float32 precision: on GPUs JAX's default float32 matmul may round inputs to TF32
# (10-bit mantissa), which would cost millimetres and non-orthonormal rotations here.
_mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


@jdc.pytree_dataclass
class RigidFit:
    """The result of :func:`rigid_fit`: ``target ~= scale * R @ source + t``.

    ``target_from_source`` holds ``R`` and ``t``; apply the whole fit (scale included) with
    :func:`apply_rigid_fit`. All fields carry the input dtype; under ``jax.vmap`` every field
    gains the batch axes.
    """

    target_from_source: jaxlie.SE3
    """Rotation ``R`` and translation ``t``; the identity when ``valid`` is False."""
    scale: Float[Array, ""]
    """The uniform scale; exactly 1 unless fitted with ``with_scale=True`` (and valid)."""
    residual: Float[Array, ""]
    """Weighted RMS distance (meters) ``sqrt(sum w |target - fit(source)|^2 / sum w)``."""
    valid: Bool[Array, ""]
    """False when fewer than 3 points have positive weight or they are (near-)collinear."""


DEFAULT_COLLINEAR_TOL = 1e-3
"""Fits whose source points have ``sigma_2 / sigma_1`` at or below this are invalid."""


def rigid_fit(
    source: Float[Array, "N 3"],
    target: Float[Array, "N 3"],
    weights: Float[Array, " N"] | Bool[Array, " N"] | None = None,
    *,
    with_scale: bool = False,
    collinear_tol: float | None = None,
) -> RigidFit:
    """Fit ``target ~= scale * R @ source + t`` by weighted least squares (Kabsch / Umeyama).

    Args:
        source: ``[N, 3]`` points.
        target: ``[N, 3]`` corresponding points.
        weights: ``[N]`` non-negative weights or a boolean visibility mask; ``None`` weighs all
            points 1. Non-finite or negative weights, and points with a non-finite coordinate,
            count as weight 0.
        with_scale: also fit a uniform scale (Umeyama); otherwise ``scale`` is 1.
        collinear_tol: the validity threshold on ``sigma_2 / sigma_1`` (module docs); ``None``
            for :data:`DEFAULT_COLLINEAR_TOL`.

    Returns:
        A :class:`RigidFit` in the (floating) dtype of the inputs. Invalid fits (module docs)
        hold the identity, scale 1 and ``valid = False``; never NaN. Jit-, vmap- and
        grad-able.
    """
    source, target, w = _prepare(source, target, weights)
    dtype = source.dtype
    tol = DEFAULT_COLLINEAR_TOL if collinear_tol is None else float(collinear_tol)

    total = jnp.sum(w)
    wn = w / jnp.where(total > 0, total, 1.0)  # normalised weights (all 0 when none)
    source_mean = _mm(wn, source)
    target_mean = _mm(wn, target)
    source_c = source - source_mean
    target_c = target - target_mean

    valid = _is_non_degenerate(source, w, tol)

    cross_cov = _mm((wn[:, None] * target_c).T, source_c)  # sum_i wn_i t_i s_i^T, [3, 3]
    eye = jnp.eye(3, dtype=dtype)
    rotation = jnp.where(valid, _proper_polar(cross_cov), eye)
    if with_scale:
        source_var = jnp.sum(wn * jnp.sum(source_c**2, axis=-1))
        ok = valid & (source_var > 0)
        # tr(R^T H) = tr(diag(1, 1, d) S): the Umeyama scale numerator.
        scale = jnp.where(ok, jnp.sum(rotation * cross_cov) / jnp.where(ok, source_var, 1.0), 1.0)
    else:
        scale = jnp.ones((), dtype)
    scale = scale.astype(dtype)
    translation = jnp.where(valid, target_mean - scale * _mm(rotation, source_mean), 0.0)

    transform = jaxlie.SE3.from_rotation_and_translation(
        jaxlie.SO3.from_matrix(rotation), translation.astype(dtype)
    )
    errors = target - (scale * _mm(source, rotation.T) + translation)
    mean_sq = jnp.sum(wn * jnp.sum(errors**2, axis=-1))
    return RigidFit(
        target_from_source=transform,
        scale=scale,
        residual=_safe_sqrt(mean_sq).astype(dtype),
        valid=valid,
    )


def rigid_fit_or_raise(
    source: Float[Array, "N 3"],
    target: Float[Array, "N 3"],
    weights: Float[Array, " N"] | Bool[Array, " N"] | None = None,
    *,
    with_scale: bool = False,
    collinear_tol: float | None = None,
) -> RigidFit:
    """:func:`rigid_fit` that raises :class:`jflow.GeometryError` when the fit is not valid.

    Eager only (it reads ``valid``); inside ``jax.jit`` / ``vmap`` use :func:`rigid_fit` and
    check ``valid``.
    """
    fit = _rigid_fit_jit(
        source, target, weights, with_scale=with_scale, collinear_tol=collinear_tol
    )
    if isinstance(fit.valid, jax.core.Tracer):
        raise ConfigError(
            "rigid_fit_or_raise needs concrete arrays; under jit or vmap call rigid_fit and "
            "check its `valid` field"
        )
    if bool(fit.valid):
        return fit
    source, _, w = _prepare(source, target, weights)
    count = int(jnp.sum(w > 0))
    if count < 3:
        raise GeometryError(
            f"rigid fit needs at least 3 points with non-zero weight, but got only {count} "
            f"points with non-zero weight (of {source.shape[0]})"
        )
    tol = DEFAULT_COLLINEAR_TOL if collinear_tol is None else float(collinear_tol)
    sigma = np.asarray(_weighted_singular_values(source, w))
    ratio = sigma[1] / sigma[0] if sigma[0] > 0 else 0.0
    raise GeometryError(
        f"rigid fit is degenerate: the {count} points with non-zero weight are coincident or "
        f"(near-)collinear (second/first singular value of the weighted centred source points "
        f"{ratio:.3g}, needs > {tol:.3g}; spread {sigma[0]:.3g} m)"
    )


_rigid_fit_jit = jax.jit(rigid_fit, static_argnames=("with_scale", "collinear_tol"))


def apply_rigid_fit(fit: RigidFit, points: Float[Array, "*batch 3"]) -> Float[Array, "*batch 3"]:
    """Map source-frame ``points`` with the fit: ``scale * R @ p + t`` (one, unbatched fit)."""
    points = jnp.asarray(points)
    return transform_points(fit.target_from_source, fit.scale.astype(points.dtype) * points)


def robust_rigid_fit(
    source: Float[Array, "N 3"],
    target: Float[Array, "N 3"],
    weights: Float[Array, " N"] | Bool[Array, " N"] | None = None,
    *,
    trim_fraction: float = 0.2,
    iterations: int = 3,
    with_scale: bool = False,
    collinear_tol: float | None = None,
) -> RigidFit:
    """A trimmed rigid fit that ignores the worst-fitting points (outliers).

    Fits all weighted points once, then ``iterations`` times: computes every weighted point's
    residual ``|target_i - fit(source_i)|`` under the current fit, drops the points whose
    residual is above the ``(1 - trim_fraction)`` quantile of those residuals (their weight
    becomes 0; the others keep their original weight) and re-fits. Each trimming starts from the
    original weights, so about ``(1 - trim_fraction) N`` points stay in; the data must have
    fewer than ``trim_fraction`` outliers for the fit to be free of them. When a re-fit is
    invalid (too few points left) the previous fit is kept.

    The returned ``residual`` is over the points kept by the last trimming. Jit-able
    (``iterations`` and ``with_scale`` static; ``trim_fraction`` may be traced); gradients flow
    through the last fit, the trimming is treated as constant.
    """
    if not isinstance(trim_fraction, jax.core.Tracer) and not 0.0 <= trim_fraction < 1.0:
        raise ConfigError(f"trim_fraction must be in [0, 1), got {trim_fraction}")
    if int(iterations) != iterations or iterations < 0:
        raise ConfigError(f"iterations must be a non-negative integer, got {iterations}")
    source, target, w0 = _prepare(source, target, weights)
    active = w0 > 0
    quantile = 1.0 - jnp.asarray(trim_fraction, source.dtype)

    def fit_step(k, fit: RigidFit) -> RigidFit:
        # Step 0 fits all weighted points; later steps trim by the previous fit's residuals.
        err = jax.lax.stop_gradient(jnp.linalg.norm(target - apply_rigid_fit(fit, source), axis=-1))
        threshold = jnp.nanquantile(jnp.where(active, err, jnp.nan), quantile)
        keep = active & ((k == 0) | (err <= threshold))
        new = rigid_fit(
            source,
            target,
            jnp.where(keep, w0, 0.0),
            with_scale=with_scale,
            collinear_tol=collinear_tol,
        )
        return jax.tree.map(lambda a, b: jnp.where(new.valid | (k == 0), a, b), new, fit)

    # One rigid_fit in the loop body (not one before it too) halves the compile time.
    return jax.lax.fori_loop(0, int(iterations) + 1, fit_step, _identity_fit(source.dtype))


# --------------------------------------------------------------------------------------------
# Internals.


def _prepare(source, target, weights):
    """Check shapes, promote to one float dtype and zero the weight of unusable points."""
    source = jnp.asarray(source)
    target = jnp.asarray(target)
    if source.ndim != 2 or source.shape[-1] != 3 or target.shape != source.shape:
        raise ShapeError(
            f"rigid fit needs source and target of the same shape [N, 3], got {source.shape} "
            f"and {target.shape} (batch with jax.vmap)"
        )
    dtype = jnp.result_type(source, target, float)
    source = source.astype(dtype)
    target = target.astype(dtype)
    n = source.shape[0]
    if weights is None:
        w = jnp.ones((n,), dtype)
    else:
        w = jnp.asarray(weights)
        if w.shape != (n,):
            raise ShapeError(f"weights must have shape [N] = ({n},), got {w.shape}")
        w = w.astype(dtype)
    finite = (
        jnp.all(jnp.isfinite(source), axis=-1)
        & jnp.all(jnp.isfinite(target), axis=-1)
        & jnp.isfinite(w)
    )
    w = jnp.where(finite & (w > 0), w, 0.0)
    source = jnp.where(finite[:, None], source, 0.0)
    target = jnp.where(finite[:, None], target, 0.0)
    return source, target, w


def _weighted_singular_values(source, w) -> Float[Array, "3"]:
    """Singular values (descending) of the rows ``sqrt(w_i / sum w) (s_i - s_bar)``."""
    source = jax.lax.stop_gradient(source)
    w = jax.lax.stop_gradient(w)
    total = jnp.sum(w)
    wn = w / jnp.where(total > 0, total, 1.0)
    centred = source - _mm(wn, source)
    return jnp.linalg.svd(jnp.sqrt(wn)[:, None] * centred, compute_uv=False)


def _is_non_degenerate(source, w, tol: float) -> Bool[Array, ""]:
    """The validity test of the module docs (>= 3 weighted points, not coincident/collinear)."""
    eps = float(jnp.finfo(source.dtype).eps)
    sigma = _weighted_singular_values(source, w)
    extent = jnp.max(jnp.where((w > 0)[:, None], jnp.abs(source), 0.0))
    return (
        (jnp.sum(w > 0) >= 3)
        & (sigma[0] > 100.0 * eps * extent)  # also excludes sigma_1 = 0
        & (sigma[1] > tol * sigma[0])
    )


def _identity_fit(dtype) -> RigidFit:
    return RigidFit(
        target_from_source=jaxlie.SE3(wxyz_xyz=jnp.array([1, 0, 0, 0, 0, 0, 0], dtype)),
        scale=jnp.ones((), dtype),
        residual=jnp.zeros((), dtype),
        valid=jnp.zeros((), bool),
    )


def _safe_sqrt(x):
    """``sqrt`` with a zero (not infinite) derivative at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _proper_polar_parts(h):
    u, s, vt = jnp.linalg.svd(h)
    d = jnp.where(jnp.linalg.det(u) * jnp.linalg.det(vt) < 0, -1.0, 1.0).astype(h.dtype)
    signs = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d])
    return _mm(u * signs, vt), s * signs, vt


@jax.custom_jvp
def _proper_polar(h: Float[Array, "3 3"]) -> Float[Array, "3 3"]:
    """The rotation ``R = argmax_{R in SO(3)} tr(R^T h)`` (Kabsch with det correction)."""
    return _proper_polar_parts(h)[0]


@_proper_polar.defjvp
def _proper_polar_jvp(primals, tangents):
    # R^T h = P is symmetric at the optimum. Differentiating with dR = R Omega (Omega skew):
    # Omega P + P Omega = R^T dh - dh^T R. In the eigenbasis V of P = V diag(sigma) V^T, with
    # sigma = (s1, s2, d s3), this is Omega'_ij (sigma_i + sigma_j) = A'_ij.
    (h,), (h_dot,) = primals, tangents
    rotation, sigma, vt = _proper_polar_parts(h)
    a = _mm(_mm(vt, _mm(rotation.T, h_dot) - _mm(h_dot.T, rotation)), vt.T)
    denom = sigma[:, None] + sigma[None, :]
    eps = jnp.finfo(h.dtype).eps
    ok = denom > 10.0 * eps * jnp.abs(sigma[0])
    omega = jnp.where(ok, a / jnp.where(ok, denom, 1.0), 0.0)
    return rotation, _mm(rotation, _mm(_mm(vt.T, omega), vt))


__all__ = [
    "DEFAULT_COLLINEAR_TOL",
    "RigidFit",
    "apply_rigid_fit",
    "rigid_fit",
    "rigid_fit_or_raise",
    "robust_rigid_fit",
]
