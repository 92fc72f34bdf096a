"""Training-free methods (gap_shift, centered, isoclip, pca_text) against plain implementations.

Each reference below is written from the method's definition (numpy, explicit loops or
formulas), independently of crossgap's code; isoclip's also follows the orientation of
``simomagi/IsoCLIP: src/retrieval.py:apply_iso`` literally ([D, W] matrices).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from crossgap.methods._shared import MissingReferenceError

METHODS = ("gap_shift", "centered", "isoclip", "pca_text")
D = 16


def method(name: str):
    return importlib.import_module(f"crossgap.methods.{name}")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def close(actual: torch.Tensor, expected: np.ndarray, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(actual.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def refs(rng) -> dict[str, torch.Tensor]:
    """Unnormalised references with a modality offset, as crossgap's feature files hold them."""
    offset = rng.normal(size=D) * 2
    return {
        "image": torch.tensor(rng.normal(size=(40, D)) * 3 + offset),
        "text": torch.tensor(rng.normal(size=(30, D)) * 2 - offset),
        "prompts": torch.tensor(rng.normal(size=(12, D)) - offset),
        "classnames": torch.tensor(rng.normal(size=(50, D)) * np.linspace(3, 0.5, D)),
    }


class Recording(Mapping):
    """A mapping that remembers which keys were read."""

    def __init__(self, data: dict) -> None:
        self.data, self.read = data, set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.data[key]

    def get(self, key, default=None):
        self.read.add(key)
        return self.data.get(key, default)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return key in self.data

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def projections(rng, w_v: int = 24, w_t: int = 20) -> dict[str, torch.Tensor]:
    return {"proj_image": torch.tensor(rng.normal(size=(w_v, D))), "proj_text": torch.tensor(rng.normal(size=(w_t, D)))}


# --------------------------------------------------------------------------------------------
# SPEC and imports
# --------------------------------------------------------------------------------------------
def test_specs_import_without_torch():
    code = (
        "import sys\n"
        + "".join(f"import crossgap.methods.{name} as m; assert m.SPEC['name'] == {name!r}\n" for name in METHODS)
        + "assert 'torch' not in sys.modules, 'a method module imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", METHODS)
def test_spec_is_complete(name):
    spec = method(name).SPEC
    assert spec["name"] == name
    assert set(spec["tasks"]) <= {"image_retrieval", "text_retrieval", "zero_shot"}
    assert set(spec["task_references"]) == set(spec["tasks"])
    for task_refs in spec["task_references"].values():
        assert set(task_refs) <= set(spec["references"])
    assert spec["features"] in ("projected", "pre")
    assert isinstance(spec["params"], dict)


# --------------------------------------------------------------------------------------------
# gap_shift
# --------------------------------------------------------------------------------------------
def test_gap_shift_matches_the_formula(refs, rng):
    m = method("gap_shift")
    stats = m.fit(refs)
    mu_i = np.mean([row / np.linalg.norm(row) for row in refs["image"].numpy()], axis=0)
    mu_t = np.mean([row / np.linalg.norm(row) for row in refs["text"].numpy()], axis=0)
    close(stats["mu_image"], mu_i)
    close(stats["mu_text"], mu_t)
    q = rng.normal(size=(7, D)) * 5
    for modality, expected in (
        ("image", [unit(row[None] / np.linalg.norm(row) - mu_i + mu_t)[0] for row in q]),
        ("text", [unit(row[None] / np.linalg.norm(row) - mu_t + mu_i)[0] for row in q]),
    ):
        out = m.apply(torch.tensor(q), stats, modality=modality, role="query")
        assert out.shape == (7, D)
        close(out, np.array(expected))
        # the gallery stays native (normalised only)
        close(m.apply(torch.tensor(q), stats, modality=modality, role="gallery"), unit(q))
    half = m.apply(torch.tensor(q), stats, modality="image", role="query", scale=0.5)
    close(half, unit(unit(q) - 0.5 * (mu_i - mu_t)))


def test_gap_shift_falls_back_to_prompts_and_names_missing_references(refs):
    m = method("gap_shift")
    no_text = {"image": refs["image"], "prompts": refs["prompts"]}
    close(m.fit(no_text)["mu_text"], unit(refs["prompts"].numpy()).mean(0))
    with pytest.raises(MissingReferenceError, match="'text' or 'prompts'"):
        m.fit({"image": refs["image"]})
    with pytest.raises(MissingReferenceError, match="'image'"):
        m.fit({"text": refs["text"]})


# --------------------------------------------------------------------------------------------
# centered
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("standardize", [False, True])
def test_centered_matches_a_loop(refs, rng, standardize):
    m = method("centered")
    stats = m.fit(refs, standardize=standardize)
    q = rng.normal(size=(6, D))
    for modality in ("image", "text"):
        r = unit(refs[modality].numpy())
        n = r.shape[0]
        mean = np.array([sum(r[i, j] for i in range(n)) / n for j in range(D)])
        std = np.array([np.sqrt(sum((r[i, j] - mean[j]) ** 2 for i in range(n)) / (n - 1)) for j in range(D)])
        x = unit(q) - mean
        if standardize:
            x = x / std
        for role in ("query", "gallery"):
            out = m.apply(torch.tensor(q), stats, modality=modality, role=role, standardize=standardize)
            close(out, unit(x))
            np.testing.assert_allclose(out.norm(dim=1).numpy(), 1, rtol=1e-6)


def test_centered_fits_the_modalities_present(refs, rng):
    m = method("centered")
    stats = m.fit({"image": refs["image"]})
    assert set(stats) == {"mean_image"}
    with pytest.raises(MissingReferenceError, match=r"'mean_text'.*'text' / 'prompts'"):
        m.apply(torch.tensor(rng.normal(size=(2, D))), stats, modality="text", role="query")
    with pytest.raises(MissingReferenceError, match="'std_image'"):
        m.apply(torch.tensor(rng.normal(size=(2, D))), stats, modality="image", role="query", standardize=True)
    with pytest.raises(MissingReferenceError, match="'image', 'text' or 'prompts'"):
        m.fit({"proj_image": refs["image"]})
    close(m.fit({"prompts": refs["prompts"]})["mean_text"], unit(refs["prompts"].numpy()).mean(0))
    with pytest.raises(ValueError, match="N >= 2"):
        m.fit({"image": refs["image"][:1]}, standardize=True)


# --------------------------------------------------------------------------------------------
# isoclip
# --------------------------------------------------------------------------------------------
def reference_isoclip(p_v: np.ndarray, p_t: np.ndarray, k_top: int, k_bottom: int):
    """apply_iso's algebra in its own orientation: W_image [D, W_v], W_text [D, W_t]."""
    w_image, w_text = p_v.T, p_t.T
    psi = w_image.T @ w_text
    u, s, vh = np.linalg.svd(psi, full_matrices=False)
    v = vh.T
    r = s.shape[0]
    u_k, v_k = u[:, k_top : r - k_bottom], v[:, k_top : r - k_bottom]
    w_text_iso = (w_text @ v_k @ v_k.T).T  # [W_t, D]
    w_image_iso = (w_image @ u_k @ u_k.T).T  # [W_v, D]
    return w_image_iso, w_text_iso, s


@pytest.mark.parametrize("k_top, k_bottom", [(3, 2), (0, 0), (5, 0), (0, 10)])
def test_isoclip_matches_apply_iso(rng, k_top, k_bottom):
    m = method("isoclip")
    refs = projections(rng)
    stats = m.fit(refs, k_top=k_top, k_bottom=k_bottom)
    iso_v, iso_t, s = reference_isoclip(refs["proj_image"].numpy(), refs["proj_text"].numpy(), k_top, k_bottom)
    close(stats["iso_image"], iso_v)
    close(stats["iso_text"], iso_t)
    close(stats["singular_values"], s)
    for modality, width, iso in (("image", 24, iso_v), ("text", 20, iso_t)):
        pre = rng.normal(size=(5, width))
        for role in ("query", "gallery"):
            out = m.apply(torch.tensor(pre), stats, modality=modality, role=role, k_top=k_top, k_bottom=k_bottom)
            assert out.shape == (5, D)
            close(out, unit(pre @ iso))


def test_isoclip_without_cuts_is_the_native_projection(rng):
    m = method("isoclip")
    refs = projections(rng)
    stats = m.fit(refs, k_top=0, k_bottom=0)
    pre = rng.normal(size=(4, 24))
    close(m.apply(torch.tensor(pre), stats, modality="image", role="query"), unit(pre @ refs["proj_image"].numpy()))


def test_isoclip_errors(rng):
    m = method("isoclip")
    refs = projections(rng)
    with pytest.raises(ValueError, match=r"k_top=150 and k_bottom=50 of the r=20"):
        m.fit(refs)  # the reference's defaults need r > 200
    with pytest.raises(MissingReferenceError, match="'proj_text'"):
        m.fit({"proj_image": refs["proj_image"]}, k_top=1, k_bottom=1)
    stats = m.fit(refs, k_top=1, k_bottom=1)
    with pytest.raises(ValueError, match="pre-projection features of width 24"):
        m.apply(torch.tensor(rng.normal(size=(3, D))), stats, modality="image", role="query")
    with pytest.raises(ValueError, match="same D"):
        m.fit({"proj_image": refs["proj_image"], "proj_text": refs["proj_text"][:, :-1]}, k_top=1, k_bottom=1)


def test_isoclip_on_a_tiny_model_with_and_without_bias(tiny_models):
    """Pre-projection features of real towers through isoclip without cuts give the native features."""
    from crossgap.models.projection import encode_with_preprojection, projection_matrices

    m = method("isoclip")
    for key in ("open_clip-vit", "open_clip-customtext"):  # the latter's text projection has a bias
        model = tiny_models[key]
        w_image, w_text = projection_matrices(model)
        stats = m.fit({"proj_image": w_image, "proj_text": w_text}, k_top=0, k_bottom=0)
        ids = model.tokenizer(["a photo of a dog", "a red car", "grass"])
        projected, pre = encode_with_preprojection(model, ids, "text")
        out = m.apply(pre, stats, modality="text", role="query")
        close(out, unit(projected.double().numpy()), tol=1e-4)


# --------------------------------------------------------------------------------------------
# pca_text
# --------------------------------------------------------------------------------------------
def reference_pca(text: np.ndarray, k: int) -> np.ndarray:
    cov = np.cov(text.T)  # centred, unbiased
    vals, vecs = np.linalg.eigh(cov)
    top = vecs[:, np.argsort(vals)[::-1][:k]]  # [D, k]
    return top @ top.T  # the projector onto the span


def test_pca_text_matches_a_numpy_pca(refs, rng):
    m = method("pca_text")
    stats = m.fit(refs)
    assert stats["components"].shape == (D // 2, D)
    proj = reference_pca(refs["classnames"].numpy(), D // 2)
    close(stats["components"].T @ stats["components"], proj)
    f = rng.normal(size=(9, D))
    for role in ("query", "gallery"):
        out = m.apply(torch.tensor(f), stats, modality="image", role=role)
        close(out, unit(np.stack([proj @ row for row in f])))
    # text features are not projected
    close(m.apply(torch.tensor(f), stats, modality="text", role="gallery"), unit(f))
    stats4 = m.fit(refs, reduce_factor=4)
    assert stats4["components"].shape == (D // 4, D)


def test_pca_text_caps_components_at_the_span_rank(rng, caplog):
    m = method("pca_text")
    few = torch.tensor(rng.normal(size=(5, D)))  # 5 names: 4 directions of variance < D // 2
    with caplog.at_level("WARNING"):
        stats = m.fit({"classnames": few})
    assert stats["components"].shape == (4, D)
    assert "keeping 4 components" in caplog.text
    close(stats["components"].T @ stats["components"], reference_pca(few.numpy(), 4))
    with pytest.raises(MissingReferenceError, match="'classnames'"):
        m.fit({"prompts": few})


# --------------------------------------------------------------------------------------------
# every method
# --------------------------------------------------------------------------------------------
def fit_refs(name: str, refs: dict, rng) -> tuple[dict, dict]:
    if name == "isoclip":
        return {**projections(rng), "image": refs["image"]}, {"k_top": 2, "k_bottom": 2}
    return dict(refs), {}


@pytest.mark.parametrize("name", METHODS)
def test_fit_reads_only_its_references(name, refs, rng):
    m = method(name)
    data, params = fit_refs(name, refs, rng)
    data["query_labels"] = torch.arange(7)
    data["query"] = torch.zeros(7, D)
    recorded = Recording(data)
    stats = m.fit(recorded, **params)
    allowed = set(m.SPEC["references"]) | set(m.SPEC["fallbacks"].values())
    assert recorded.read <= allowed, f"{name} read {recorded.read - allowed}"
    assert "query_labels" not in recorded.read and "query" not in recorded.read
    again = m.fit(data, **params)
    assert set(stats) == set(again) and all(torch.equal(stats[k], again[k]) for k in stats)
    assert all(isinstance(v, torch.Tensor) for v in stats.values())


@pytest.mark.parametrize("name", METHODS)
def test_outputs_are_normalised_and_arguments_checked(name, refs, rng):
    m = method(name)
    data, params = fit_refs(name, refs, rng)
    stats = m.fit(data, **params)
    width = 24 if name == "isoclip" else D
    x = torch.tensor(rng.normal(size=(5, width)) * 4)
    for role in ("query", "gallery"):
        out = m.apply(x, stats, modality="image", role=role, **params)
        assert out.shape == (5, D)
        np.testing.assert_allclose(out.norm(dim=1).numpy(), 1, rtol=1e-6)
    assert m.apply(x[:0], stats, modality="image", role="query", **params).shape == (0, D)
    assert m.apply(x.float(), stats, modality="image", role="query", **params).dtype == torch.float32
    with pytest.raises(ValueError, match="modality"):
        m.apply(x, stats, modality="audio", role="query", **params)
    with pytest.raises(ValueError, match="role"):
        m.apply(x, stats, modality="image", role="index", **params)
    with pytest.raises(TypeError, match="unknown parameter"):
        m.fit(data, not_a_param=1, **params)
    with pytest.raises(ValueError, match="NaN or inf"):
        m.apply(torch.full((2, width), float("nan")), stats, modality="image", role="query", **params)
