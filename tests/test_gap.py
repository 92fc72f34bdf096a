"""modality_gap against a naive pairwise loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossgap.metrics.gap import GAP_KEYS, modality_gap


def naive_gap(image: np.ndarray, text: np.ndarray) -> dict[str, float]:
    x = image / np.linalg.norm(image, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    n = len(x)
    ii, tt, cross = [], [], []
    for i in range(n):
        for j in range(n):
            if i != j:
                ii.append(float(x[i] @ x[j]))
                tt.append(float(t[i] @ t[j]))
                cross.append(float(x[i] @ t[j]))
    return {
        "gap_distance": float(np.linalg.norm(x.mean(0) - t.mean(0))),
        "matched_cosine": float(np.mean([x[i] @ t[i] for i in range(n)])),
        "image_image_cosine": float(np.mean(ii)),
        "text_text_cosine": float(np.mean(tt)),
        "cross_cosine_unmatched": float(np.mean(cross)),
    }


def shifted_pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Matched pairs in two offset cones, as CLIP's modalities are (a non-trivial gap)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    shift = np.zeros(d)
    shift[0] = 3.0
    image = (base + shift + 0.5 * rng.normal(size=(n, d))) * rng.uniform(0.5, 4, size=(n, 1))
    text = base - shift + 0.5 * rng.normal(size=(n, d))
    return image, text


@pytest.mark.parametrize("n, d, chunk", [(2, 3, 65536), (9, 5, 65536), (23, 8, 4)])
def test_matches_the_naive_loop(n, d, chunk):
    image, text = shifted_pairs(n, d)
    got = modality_gap(torch.tensor(image, dtype=torch.float32), torch.tensor(text), chunk_size=chunk)
    want = naive_gap(image, text)
    assert set(GAP_KEYS) <= set(got) and got["num_pairs"] == n
    for key in GAP_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_known_values():
    # identical modalities: no gap, cosine 1 for matched pairs
    image, _ = shifted_pairs(12, 6)
    stats = modality_gap(image, image * 2.0)
    assert stats["gap_distance"] == pytest.approx(0.0, abs=1e-12)
    assert stats["matched_cosine"] == pytest.approx(1.0)
    assert stats["cross_cosine_unmatched"] == pytest.approx(stats["image_image_cosine"])
    # opposite modalities: centroids ‖2m‖ apart
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    stats = modality_gap(x, -x)
    assert stats["gap_distance"] == pytest.approx(np.sqrt(2.0))
    assert stats["matched_cosine"] == pytest.approx(-1.0)
    assert stats["image_image_cosine"] == pytest.approx(0.0) and stats["text_text_cosine"] == pytest.approx(0.0)


def test_large_n_without_pairwise_matrix():
    image, text = shifted_pairs(20000, 16, seed=1)
    stats = modality_gap(torch.tensor(image), torch.tensor(text), chunk_size=4096)
    # a subsample's naive value agrees to sampling error; the closed form is exact on all N
    sub = naive_gap(image[:150], text[:150])
    assert stats["gap_distance"] == pytest.approx(sub["gap_distance"], abs=0.05)
    assert stats["image_image_cosine"] == pytest.approx(sub["image_image_cosine"], abs=0.05)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        modality_gap(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2"):
        modality_gap(torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="non-zero"):
        modality_gap(torch.zeros(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="finite"):
        modality_gap(torch.full((3, 4), float("nan")), torch.ones(3, 4))
