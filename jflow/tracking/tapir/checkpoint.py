"""Load the official TAPIR checkpoints (Haiku ``.npy`` files) into :class:`TAPIR`.

An official checkpoint is ``np.save``'d with ``allow_pickle=True`` and holds
``{'params': {module: {tensor: array}}, 'state': {}}``; module names look like
``tapir/~/resnet/~/block_group_1/~/block_0/~/conv_0`` and tensors are ``w``/``b`` (linear
and convolution layers) or ``scale``/``offset`` (norms). The layouts of Haiku and Flax
agree for every tensor TAPIR has (convolutions ``[kh, kw, in, out]``, linear layers
``[in, out]``, depthwise temporal convolutions ``[k, 1, channels]``), so the loader only
renames; nothing is transposed.

The expected names and shapes are derived from the model itself, so the loader needs no
data file at runtime. Which model a file holds is read off the tensors: any
``tapir/~/extra_convs/...`` tensor means BootsTAPIR; otherwise the input width of
``tapir/~/pips_mlp_mixer/linear`` gives the pyramid level (486 rows: TAPIR; 535: the
causal TAPIR checkpoint, the only official one with a pyramid level and no extra
convolutions). Pass ``variant=`` to override.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jflow.errors import DataError, ShapeError
from jflow.tracking.tapir.config import VARIANTS, TapirConfig, variant_config
from jflow.tracking.tapir.model import TAPIR

ROOT = "tapir/~/"
_TENSOR_NAMES = {"kernel": "w", "bias": "b", "scale": "scale", "offset": "offset"}
_FLAX_NAMES = {v: k for k, v in _TENSOR_NAMES.items()}


def _suffix(i: int) -> str:
    return "" if i == 0 else f"_{i}"


def haiku_name(path: tuple[Any, ...]) -> tuple[str, str]:
    """Map a parameter path of :class:`TAPIR` to ``(haiku module, tensor name)``."""
    *mods, leaf = (str(p) for p in path)
    tensor = _TENSOR_NAMES[leaf]
    if mods[:2] == ["features", "resnet"]:
        rest = mods[2:]
        if rest == ["initial_conv"]:
            return ROOT + "resnet/~/initial_conv", tensor
        _, g, b, layer = rest  # block_groups, g, b, layer
        return f"{ROOT}resnet/~/block_group_{g}/~/block_{b}/~/{layer}", tensor
    if mods[:2] == ["features", "extra_convs"]:
        kind, i = mods[2], int(mods[3])
        if kind == "layer_norms":
            return f"{ROOT}extra_convs/layer_norm{_suffix(i)}", tensor
        return f"{ROOT}extra_convs/conv2_d{_suffix(2 * i + (kind == 'down'))}", tensor
    if mods[0] == "pips_mlp_mixer":
        if mods[1] == "blocks":
            return f"{ROOT}pips_mlp_mixer/block{_suffix(int(mods[2]))}/{mods[3]}", tensor
        return f"{ROOT}pips_mlp_mixer/{mods[1]}", tensor
    (name,) = mods
    return ROOT + name, tensor


def flax_path(module: str, tensor: str) -> tuple[Any, ...] | None:
    """Inverse of :func:`haiku_name`; ``None`` for names TAPIR has no place for."""
    if not module.startswith(ROOT) or tensor not in _FLAX_NAMES:
        return None
    leaf = _FLAX_NAMES[tensor]
    rest = module[len(ROOT) :]
    if rest == "resnet/~/initial_conv":
        return ("features", "resnet", "initial_conv", leaf)
    m = re.fullmatch(r"resnet/~/block_group_(\d+)/~/block_(\d+)/~/(\w+)", rest)
    if m:
        return ("features", "resnet", "block_groups", int(m[1]), int(m[2]), m[3], leaf)
    m = re.fullmatch(r"extra_convs/(conv2_d|layer_norm)(?:_(\d+))?", rest)
    if m:
        i = int(m[2] or 0)
        if m[1] == "layer_norm":
            return ("features", "extra_convs", "layer_norms", i, leaf)
        return ("features", "extra_convs", "down" if i % 2 else "up", i // 2, leaf)
    m = re.fullmatch(r"pips_mlp_mixer/block(?:_(\d+))?/(\w+)", rest)
    if m:
        return ("pips_mlp_mixer", "blocks", int(m[1] or 0), m[2], leaf)
    m = re.fullmatch(r"pips_mlp_mixer/(\w+)", rest)
    if m:
        return ("pips_mlp_mixer", m[1], leaf)
    if "/" not in rest:
        return (rest, leaf)
    return None


def _param_leaves(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_param_leaves(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def abstract_model(config: TapirConfig) -> TAPIR:
    """A :class:`TAPIR` whose parameters are shapes only (nothing is initialised)."""
    return nnx.eval_shape(lambda: TAPIR(config, rngs=nnx.Rngs(0)))


def expected_layout(config: TapirConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """The checkpoint layout ``{module: {tensor: shape}}`` a model with ``config`` has."""
    state = nnx.to_pure_dict(nnx.state(abstract_model(config), nnx.Param))
    layout: dict[str, dict[str, tuple[int, ...]]] = {}
    for path, leaf in _param_leaves(state).items():
        module, tensor = haiku_name(path)
        layout.setdefault(module, {})[tensor] = tuple(leaf.shape)
    return layout


def model_to_haiku_params(model: TAPIR) -> dict[str, dict[str, np.ndarray]]:
    """The model's parameters in the official checkpoint layout (numpy arrays)."""
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    out: dict[str, dict[str, np.ndarray]] = {}
    for path, leaf in _param_leaves(state).items():
        module, tensor = haiku_name(path)
        out.setdefault(module, {})[tensor] = np.asarray(leaf)
    return out


def save_tapir_checkpoint(model: TAPIR, path: str | os.PathLike) -> Path:
    """Write ``model`` as an official-layout ``.npy`` (readable by tapnet and this loader)."""
    path = Path(path)
    np.save(path, {"params": model_to_haiku_params(model), "state": {}}, allow_pickle=True)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def read_haiku_params(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read the ``params`` dict of an official checkpoint, checking its structure."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TAPIR checkpoint not found: {path}")
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as err:  # noqa: BLE001 - numpy raises several types here
        raise DataError(f"cannot read TAPIR checkpoint {path}: {err}") from err
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, Mapping):
        raise DataError(
            f"{path} is not a pickled dict of Haiku parameters (got {type(obj).__name__})"
        )
    params = obj.get("params", obj)
    if not isinstance(params, Mapping):
        raise DataError(f"{path}: 'params' is not a dict")
    bad = [k for k, v in params.items() if not isinstance(v, Mapping)]
    if bad:
        raise DataError(
            f"{path}: entries that are not {{tensor: array}} dicts: {', '.join(map(str, bad))}"
        )
    return {str(m): {str(t): np.asarray(a) for t, a in v.items()} for m, v in params.items()}


def infer_variant(params: Mapping[str, Mapping[str, Any]]) -> str:
    """Which official model a parameter dict is: ``tapir``, ``bootstapir`` or ``causal_tapir``."""
    if any(k.startswith(ROOT + "extra_convs/") for k in params):
        return "bootstapir"
    mixer_in = params.get(ROOT + "pips_mlp_mixer/linear", {}).get("w")
    if mixer_in is None or np.ndim(mixer_in) != 2:
        raise DataError(
            f"cannot tell the TAPIR variant: no 2-D '{ROOT}pips_mlp_mixer/linear' 'w' tensor; "
            "pass variant= explicitly"
        )
    rows = int(np.shape(mixer_in)[0])
    for name in ("tapir", "causal_tapir"):
        if VARIANTS[name].mixer_input_dim == rows:
            return name
    raise DataError(
        f"cannot tell the TAPIR variant: '{ROOT}pips_mlp_mixer/linear' has {rows} input rows "
        f"(TAPIR has {VARIANTS['tapir'].mixer_input_dim}, causal TAPIR "
        f"{VARIANTS['causal_tapir'].mixer_input_dim}); pass variant= explicitly"
    )


def check_layout(
    params: Mapping[str, Mapping[str, Any]],
    expected: Mapping[str, Mapping[str, tuple[int, ...]]],
    what: str,
) -> None:
    """Raise naming every missing, unexpected and mis-shaped tensor.

    :class:`DataError` when tensors are missing or unexpected, :class:`ShapeError` when the
    names all match but some shapes do not.
    """
    missing, unexpected, misshaped = [], [], []
    for module, tensors in expected.items():
        for tensor, shape in tensors.items():
            got = params.get(module, {}).get(tensor)
            if got is None:
                missing.append(f"{module}/{tensor} {list(shape)}")
            elif tuple(np.shape(got)) != tuple(shape):
                misshaped.append(
                    f"{module}/{tensor}: expected {list(shape)}, got {list(np.shape(got))}"
                )
    for module, tensors in params.items():
        for tensor, arr in tensors.items():
            if tensor not in expected.get(module, {}):
                unexpected.append(f"{module}/{tensor} {list(np.shape(arr))}")
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint does not match {what}:"]
    for title, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("mis-shaped", misshaped),
    ):
        if items:
            lines.append(f"  {len(items)} {title}:")
            lines.extend(f"    {item}" for item in items)
    cls = DataError if (missing or unexpected) else ShapeError
    raise cls("\n".join(lines))


def params_to_model(
    params: Mapping[str, Mapping[str, Any]], config: TapirConfig, what: str = "TAPIR"
) -> TAPIR:
    """Build a :class:`TAPIR` with ``config`` holding exactly the tensors in ``params``."""
    model = abstract_model(config)
    check_layout(params, expected_layout(config), what)
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    for module, tensors in params.items():
        for tensor, arr in tensors.items():
            node = pure
            path = flax_path(module, tensor)
            assert path is not None  # check_layout accepted the name
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = jnp.asarray(np.asarray(arr, dtype=np.float32))
    # Anything not a parameter (there is nothing else today) would stay abstract.
    leftovers = [p for p, v in _param_leaves(pure).items() if isinstance(v, jax.ShapeDtypeStruct)]
    if leftovers:
        raise DataError(f"parameters left unset by the checkpoint: {leftovers}")
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def random_haiku_params(config: TapirConfig, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Freshly initialised parameters in the checkpoint layout, drawn with numpy.

    Kernels are normal with variance 1 / fan-in (fan-in = every axis but the last), biases
    and offsets zero, scales one, and BootsTAPIR's residual output convolutions zero, as in
    the reference initialisation up to the truncation of the normal. Much faster than
    :class:`TAPIR`'s own initialisers on CPU, which compile one XLA program per shape.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for module, tensors in sorted(expected_layout(config).items()):
        for tensor, shape in sorted(tensors.items()):
            if tensor == "w":
                fan_in = int(np.prod(shape[:-1]))
                zero = re.search(r"extra_convs/conv2_d_(\d+)$", module)
                if zero and int(zero[1]) % 2:
                    arr = np.zeros(shape, np.float32)
                else:
                    arr = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
            elif tensor == "scale":
                arr = np.ones(shape, np.float32)
            else:
                arr = np.zeros(shape, np.float32)
            out.setdefault(module, {})[tensor] = arr
    return out


def init_tapir(config: TapirConfig | None = None, seed: int = 0) -> TAPIR:
    """A randomly initialised :class:`TAPIR` built from :func:`random_haiku_params`."""
    config = config or TapirConfig()
    return params_to_model(random_haiku_params(config, seed), config, what="a fresh model")


def load_tapir_checkpoint(
    path: str | os.PathLike, variant: str | None = None, **config_overrides
) -> tuple[str, TAPIR]:
    """Load an official TAPIR / BootsTAPIR / causal TAPIR ``.npy`` checkpoint.

    Returns ``(variant, model)``. ``variant`` is inferred from the tensors unless given;
    ``config_overrides`` change settings that no tensor depends on (e.g.
    ``num_pips_iter=1`` for a quick run); overrides that change shapes make the load fail
    with a message that names the tensors.

    Raises :class:`DataError` for an unreadable file or missing / unexpected tensors, and
    :class:`ShapeError` for tensors of the wrong shape; the message lists every one.
    """
    params = read_haiku_params(path)
    name = variant if variant is not None else infer_variant(params)
    config = variant_config(name, **config_overrides)
    return name, params_to_model(params, config, what=f"the {name} layout ({path})")
