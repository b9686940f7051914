import numpy as np
import pytest

from worker.models.blobs import nchw_float32, normalised


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)


def test_nchw_float32_is_a_contiguous_transposed_copy(images: np.ndarray) -> None:
    blob = nchw_float32(images)
    assert blob.shape == (2, 3, 5, 7) and blob.dtype == np.float32 and blob.flags.c_contiguous
    np.testing.assert_array_equal(blob, images.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(nchw_float32(images, bgr=True)[:, 0], images[..., 2])
    blob[0, 0, 0, 0] = -1  # a copy: the caller may normalise it in place
    assert images[0, 0, 0, 0] >= 0


def test_normalised_matches_the_textbook_formula_bit_for_bit(images: np.ndarray) -> None:
    textbook = ((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(normalised(images, 127.5, 128.0), textbook)
    mean = np.array([10.0, 20.0, 30.0], dtype=np.float32)
    std = np.array([2.0, 3.0, 5.0], dtype=np.float32)
    per_channel = ((images.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(normalised(images, mean, std), per_channel)
