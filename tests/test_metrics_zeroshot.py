"""Zero-shot classifier construction and accuracy against direct argmax counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossgap.metrics import build_classifier, evaluate_zero_shot


def test_build_classifier_layouts_and_recipe():
    rng = np.random.default_rng(0)
    c, t, d = 6, 4, 8
    prompts = torch.from_numpy(rng.normal(size=(c, t, d))).float()
    expected = torch.stack([p / p.norm(dim=1, keepdim=True) for p in prompts]).mean(dim=1)
    expected = expected / expected.norm(dim=1, keepdim=True)
    w = build_classifier(prompts)
    assert w.shape == (c, d)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(build_classifier(prompts.reshape(c * t, d), num_classes=c), expected)
    template_major = prompts.transpose(0, 1).reshape(t * c, d)
    torch.testing.assert_close(build_classifier(template_major, num_classes=c, template_major=True), expected)
    torch.testing.assert_close(build_classifier(prompts.numpy()), expected)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier(prompts.reshape(c * t, d))
    with pytest.raises(ValueError, match="multiple"):
        build_classifier(prompts.reshape(c * t, d), num_classes=5)


def test_accuracy_equals_argmax_count():
    rng = np.random.default_rng(1)
    n, c, d = 300, 12, 16
    w = rng.normal(size=(c, d))
    labels = rng.integers(0, c, n)
    x = w[labels] * 0.8 + rng.normal(size=(n, d))  # informative but noisy features
    out = evaluate_zero_shot(x, w, labels, chunk_size=64, device="cpu")
    scores = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    pred = scores.argmax(axis=1)
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert out["top1_correct"] == int((pred == labels).sum())
    assert out["top1"] == pytest.approx(100 * np.mean(pred == labels))
    assert out["top5"] == pytest.approx(100 * np.mean([labels[i] in top5[i] for i in range(n)]))
    recalls = [np.mean(pred[labels == k] == k) for k in range(c) if (labels == k).any()]
    assert out["mean_per_class_recall"] == pytest.approx(100 * np.mean(recalls))
    assert out["num_samples"] == n and out["num_classes"] == c and out["num_classes_evaluated"] == len(recalls)
    assert 0 < out["top1"] < out["top5"] < 100


def test_modes_share_one_function():
    # OVI mode: the classifier is built from (inverted) image-side prompt features;
    # OTI mode: the features are (inverted) text-side. Same call, different inputs.
    rng = np.random.default_rng(2)
    prompts = torch.from_numpy(rng.normal(size=(5, 3, 8))).float()
    w = build_classifier(prompts)
    feats = w[[0, 1, 2, 3, 4, 0]] + 0.01
    out = evaluate_zero_shot(feats, w, [0, 1, 2, 3, 4, 0], device="cpu")
    assert out["top1"] == 100.0 and out["top5"] == 100.0  # top-5 is top-min(5, C)


def test_ties_and_missing_classes():
    w = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # classes 0 and 1 are identical
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    out = evaluate_zero_shot(x, w, [0, 1, 2], device="cpu")
    # ties go to the lower class index, as argmax
    assert out["top1_correct"] == 2
    assert out["mean_per_class_recall"] == pytest.approx(100 * (1 + 0 + 1) / 3)
    out = evaluate_zero_shot(x[:1], w, [0], device="cpu")
    assert out["num_classes_evaluated"] == 1 and out["mean_per_class_recall"] == 100.0


def test_errors():
    with pytest.raises(ValueError, match="labels outside"):
        evaluate_zero_shot(np.ones((2, 3)), np.ones((2, 3)), [0, 2], device="cpu")
    with pytest.raises(ValueError):
        evaluate_zero_shot(np.ones((2, 3)), np.ones((2, 4)), [0, 1], device="cpu")
