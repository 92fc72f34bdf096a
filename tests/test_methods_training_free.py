"""Training-free methods against plain implementations and the peers' own functions, transcribed.

Each reference below is written from the method's definition (numpy, explicit loops or
formulas), independently of crossgap's code, or transcribed from the peer's published function:
``simomagi/IsoCLIP: src/retrieval.py:apply_iso`` ([D, W] matrices), Herzog & Wang's
``Vision-Kek/Is-CLIP-Really-Misaligned: cvpr26-suppl/span_projection.py`` (``fit_pca``,
``transform_pca``) and Liang et al.'s ``Weixin-Liang/Modality-Gap:
Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py`` (``move_features``).  The contract
tests run over the registry, so a new method module is tested with no edit here.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from crossgap.methods import SPECS, MethodUnavailable
from crossgap.methods._shared import MissingReferenceError

#: every registered transform (the registry is the list: nothing pinned here)
METHODS = tuple(sorted(SPECS))
D = 16


def method(name: str):
    """The module of method ``name`` (``pca_text_dataset`` lives in ``pca_text``)."""
    return importlib.import_module(SPECS[name].module)


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
        "imagenet_classnames": torch.tensor(rng.normal(size=(80, D)) * np.linspace(0.5, 3, D)),
        "classifier": torch.tensor(rng.normal(size=(6, D)) - offset),
    }


class Recording(Mapping):
    """A mapping that remembers which keys' values were read (``refs[key]``; presence checks do not count)."""

    def __init__(self, data: dict) -> None:
        self.data, self.read = data, set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.data[key]

    def __contains__(self, key) -> bool:
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
        "import crossgap.methods as m\n"
        f"assert sorted(m.SPECS) == {sorted(SPECS)!r}\n"
        "assert 'torch' not in sys.modules, 'a method module imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", METHODS)
def test_spec_is_complete(name):
    spec = SPECS[name]
    assert spec.name == name and spec.module.startswith("crossgap.methods.")
    assert set(spec.tasks) <= {"image_retrieval", "text_retrieval", "zero_shot"}
    assert set(spec.references) == set(spec.tasks) and set(spec.recipes) == set(spec.tasks)
    assert spec.features in ("projected", "pre")
    for task in spec.tasks:
        recipe = spec.recipe(task, spec.defaults(task))
        assert recipe.source and recipe.variant
        assert (recipe.repository is None) == (recipe.file is None)


# --------------------------------------------------------------------------------------------
# the contract, checked at discovery
# --------------------------------------------------------------------------------------------
def _module(**attrs):
    import types

    mod = types.SimpleNamespace(fit=lambda refs, **p: {}, apply=lambda x, s, **p: x)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


GOOD = dict(name="m", tasks=("image_retrieval",), references={"image_retrieval": ("image",)}, params={},
            description="d", recipe=dict(source="s", variant="v"))


@pytest.mark.parametrize("broken, message", [
    ({**GOOD, "refrences": {}}, r"unknown key\(s\) \['refrences'\]"),
    ({k: v for k, v in GOOD.items() if k != "recipe"}, r"missing key\(s\) \['recipe'\]"),
    ({**GOOD, "tasks": ("image_retrieval", "captioning")}, "must be a non-empty subset"),
    ({**GOOD, "references": {"zero_shot": ("image",)}}, "references must map every task"),
    ({**GOOD, "params": {"tasks": 1}}, "reserved"),
    ({**GOOD, "task_params": {"image_retrieval": {"k": 1}}}, "name only its params"),
    ({**GOOD, "features": "raw"}, "features must be one of"),
    ({**GOOD, "recipe": dict(source="s")}, "lacks \\['variant'\\]"),
])
def test_a_broken_declaration_is_an_error_naming_the_module(broken, message):
    from crossgap.methods.contract import MethodContractError, build_specs

    with pytest.raises(MethodContractError, match=message) as err:
        build_specs("crossgap.methods.broken", _module(SPEC=broken))
    assert "crossgap.methods.broken" in str(err.value)
    with pytest.raises(MethodContractError, match="must define fit"):
        build_specs("crossgap.methods.nofit", _module(SPEC=GOOD, fit=None))
    assert build_specs("crossgap.methods.helper", _module()) == ()


# --------------------------------------------------------------------------------------------
# gap_shift
# --------------------------------------------------------------------------------------------
def test_gap_shift_query_form_matches_the_formula(refs, rng):
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
        out = m.apply(torch.tensor(q), stats, modality=modality, role="query", form="query")
        assert out.shape == (7, D)
        close(out, np.array(expected))
        # the gallery stays native (normalised only)
        close(m.apply(torch.tensor(q), stats, modality=modality, role="gallery", form="query"), unit(q))
    half = m.apply(torch.tensor(q), stats, modality="image", role="query", form="query", scale=0.5)
    close(half, unit(unit(q) - 0.5 * (mu_i - mu_t)))


def liang_move_features(image_features: torch.Tensor, text_features: torch.Tensor, delta: float):
    """Liang et al.'s ``move_features`` (Weixin-Liang/Modality-Gap,
    Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py) for one ``delta`` of its sweep,
    transcribed: the gap of the two sets' means, unit length, half of delta on each side."""
    modality_gap = image_features.mean(axis=0) - text_features.mean(axis=0)
    modality_gap = modality_gap / modality_gap.norm()
    modified_text_features = text_features + 0.5 * delta * modality_gap
    modified_text_features /= modified_text_features.norm(dim=-1, keepdim=True)
    modified_image_features = image_features - 0.5 * delta * modality_gap
    modified_image_features /= modified_image_features.norm(dim=-1, keepdim=True)
    return modified_image_features, modified_text_features


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_gap_shift_liang_form_is_move_features(rng, scale):
    """Zero-shot default: Liang's two-sided move, delta = scale x the gap distance, means fitted on
    the same (normalised) image and class features move_features moves."""
    m = method("gap_shift")
    offset = rng.normal(size=D)
    images = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(30, D)) + offset), dim=1)
    classes = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(5, D)) - offset), dim=1)
    stats = m.fit({"image": images, "classifier": classes})
    distance = float((images.mean(0) - classes.mean(0)).norm())
    want_i, want_t = liang_move_features(images, classes, scale * distance)
    params = {"form": "liang", "scale": scale}
    close(m.apply(images, stats, modality="image", role="query", **params), want_i.numpy())
    close(m.apply(classes, stats, modality="text", role="gallery", **params), want_t.numpy())
    assert SPECS["gap_shift"].defaults("zero_shot") == {"form": "liang", "scale": 1.0}
    assert SPECS["gap_shift"].defaults("image_retrieval") == {"form": "query", "scale": 1.0}
    recipe = SPECS["gap_shift"].recipe("zero_shot", params)
    assert (recipe.repository, recipe.file) == ("Weixin-Liang/Modality-Gap",
                                                "Table_1_Implications_CLIP_Zero_Shot/training/train_clip.py")
    assert SPECS["gap_shift"].recipe("image_retrieval", {"form": "query"}).repository is None  # crossgap's own
    with pytest.raises(ValueError, match="form must be one of"):
        m.fit({"image": images, "classifier": classes}, form="both")


def test_gap_shift_falls_back_to_prompts_and_names_missing_references(refs):
    m = method("gap_shift")
    no_text = {"image": refs["image"], "prompts": refs["prompts"]}
    close(m.fit(no_text)["mu_text"], unit(refs["prompts"].numpy()).mean(0))
    with pytest.raises(MissingReferenceError, match="'text' or 'classifier' or 'prompts'"):
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
    with pytest.raises(MissingReferenceError, match=r"'mean_text'.*'text' / 'classifier' / 'prompts'"):
        m.apply(torch.tensor(rng.normal(size=(2, D))), stats, modality="text", role="query")
    with pytest.raises(MissingReferenceError, match="'std_image'"):
        m.apply(torch.tensor(rng.normal(size=(2, D))), stats, modality="image", role="query", standardize=True)
    with pytest.raises(MissingReferenceError, match="'image', 'text', 'classifier' or 'prompts'"):
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
    # the reference's defaults need r > 200: a capability this model lacks, declared as such
    with pytest.raises(MethodUnavailable, match=r"k_top=150 and k_bottom=50 of the r=20"):
        m.fit(refs)
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
    stats = m.fit({"classnames": refs["classnames"]})
    assert stats["components"].shape == (D // 2, D)
    proj = reference_pca(refs["classnames"].numpy(), D // 2)
    close(stats["components"].T @ stats["components"], proj)
    f = rng.normal(size=(9, D))
    for role in ("query", "gallery"):
        out = m.apply(torch.tensor(f), stats, modality="image", role=role)
        close(out, unit(np.stack([proj @ row for row in f])))
    # text features are not projected
    close(m.apply(torch.tensor(f), stats, modality="text", role="gallery"), unit(f))
    stats4 = m.fit({"classnames": refs["classnames"]}, reduce_factor=4)
    assert stats4["components"].shape == (D // 4, D)


def hw_fit_pca(feats: torch.Tensor, reduce_factor: int = 2) -> torch.Tensor:
    """Herzog & Wang's ``fit_pca`` (cvpr26-suppl/span_projection.py), transcribed."""
    n_components = feats.shape[1] // reduce_factor
    covmat = torch.cov(feats.T)
    eigvals, eigvecs = torch.linalg.eigh(covmat)
    sorted_indcs = torch.sort(eigvals.float().cpu(), descending=True).indices
    return eigvecs[:, sorted_indcs[:n_components]].float().T


def hw_transform_pca(span: torch.Tensor, feats_tensor: torch.Tensor) -> torch.Tensor:
    """Herzog & Wang's ``transform_pca`` (same file), transcribed: ``(Uᵀ U fᵀ)ᵀ``."""
    u = span.to(feats_tensor.device, feats_tensor.dtype)
    return (u.T @ u @ feats_tensor.T).T


@pytest.mark.parametrize("name, span_key", [("pca_text", "imagenet_classnames"), ("pca_text_dataset", "classnames")])
def test_both_spans_of_pca_text_equal_herzog_and_wang(refs, rng, name, span_key):
    """``pca_text`` fits on the ImageNet-1k names (the authors' span, every dataset), ``pca_text_dataset``
    on the dataset's own names; both then are fit_pca + transform_pca (+ the cosine's normalisation)."""
    assert SPECS[name].references == {"image_retrieval": (span_key,), "zero_shot": (span_key,)}
    m = method(name)
    span = refs[span_key].float()
    stats = m.fit({span_key: span})
    f = torch.tensor(rng.normal(size=(11, D))).float()
    expected = torch.nn.functional.normalize(hw_transform_pca(hw_fit_pca(span), f), dim=1)
    close(m.apply(f, stats, modality="image", role="query"), expected.double().numpy(), tol=1e-4)
    recipe = SPECS[name].recipe("image_retrieval", SPECS[name].defaults("image_retrieval"))
    if name == "pca_text":
        assert (recipe.repository, recipe.file) == ("Vision-Kek/Is-CLIP-Really-Misaligned",
                                                    "cvpr26-suppl/span_projection.py")
    else:
        assert recipe.repository is None and "crossgap" in recipe.source


def test_the_authors_span_is_pytorch_hubs_imagenet_classes():
    from crossgap.methods.vocabularies import vocabulary_names

    names = vocabulary_names("imagenet")
    assert len(names) == 1000 and len(set(names)) == 998  # 'crane' and 'maillot' appear twice, as in the file
    assert names[:5] == ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead"]
    assert names[134] == names[517] == "crane" and names[638] == names[639] == "maillot"
    assert names[-1] == "toilet tissue"
    with pytest.raises(ValueError, match="unknown vocabulary 'coco'"):
        vocabulary_names("coco")


def test_pca_text_caps_components_at_the_span_rank(rng, caplog):
    m = method("pca_text_dataset")
    few = torch.tensor(rng.normal(size=(5, D)))  # 5 names: 4 directions of variance < D // 2
    with caplog.at_level("WARNING"):
        stats = m.fit({"classnames": few})
    assert stats["components"].shape == (4, D)
    assert "keeping 4 components" in caplog.text
    close(stats["components"].T @ stats["components"], reference_pca(few.numpy(), 4))
    with pytest.raises(MissingReferenceError, match="'imagenet_classnames' or 'classnames'"):
        m.fit({"prompts": few})
    with pytest.raises(MethodUnavailable, match="1 class name"):
        m.fit({"classnames": few[:1]})


# --------------------------------------------------------------------------------------------
# every registered method (the registry is the list)
# --------------------------------------------------------------------------------------------
def fit_refs(name: str, task: str, refs: dict, rng) -> tuple[dict, dict]:
    """The references ``name`` declares for ``task`` (with fallbacks), plus data it must not read."""
    spec = SPECS[name]
    data = {**refs, **projections(rng)}
    params = dict(spec.defaults(task))
    if spec.features == "pre":  # isoclip: the tiny projections have r = 20 directions
        params |= {"k_top": 2, "k_bottom": 2}
    return data, params


def _pairs():
    return [(name, task) for name in METHODS for task in SPECS[name].tasks]


@pytest.mark.parametrize("name, task", _pairs())
def test_fit_reads_only_its_references(name, task, refs, rng):
    m = method(name)
    spec = SPECS[name]
    data, params = fit_refs(name, task, refs, rng)
    data["query_labels"] = torch.arange(7)
    data["query"] = torch.zeros(7, D)
    wanted = set(spec.references[task]) | {spec.fallbacks[k] for k in spec.references[task] if k in spec.fallbacks}
    # the pipeline passes fit exactly the task's resolved references: here those, and queries it must never read
    recorded = Recording({k: v for k, v in data.items() if k in wanted or k.startswith("query")})
    stats = m.fit(recorded, **params)
    assert recorded.read and recorded.read <= wanted, f"{name} read {recorded.read - wanted}"
    assert "query_labels" not in recorded.read and "query" not in recorded.read
    again = m.fit({k: v for k, v in data.items() if k in wanted}, **params)  # the declared ones suffice
    assert set(stats) == set(again) and all(torch.equal(stats[k], again[k]) for k in stats)
    assert all(isinstance(v, torch.Tensor) for v in stats.values())


@pytest.mark.parametrize("name, task", _pairs())
def test_outputs_are_normalised_and_arguments_checked(name, task, refs, rng):
    m = method(name)
    data, params = fit_refs(name, task, refs, rng)
    stats = m.fit(data, **params)
    width = 24 if SPECS[name].features == "pre" else D
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
