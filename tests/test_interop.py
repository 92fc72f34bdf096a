"""crossgap import-reference: reference OTI/OVI runs, written here in the reference's format and layout
(miccunifi/Cross-the-Gap src/utils.py save_tokens: <method>_pseudo_tokens.pt, names.pkl, losses.pkl,
hyperparameters.json under data/<method>_pseudo_tokens/<dataset>/<split>/<exp_name>), become crossgap
inversion files that crossgap's evaluation steps read."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_datasets import make_coop_dataset

from crossgap.cli import main
from crossgap.datasets import prepare_manifest, read_manifest, select
from crossgap.steps.evaluation import retrieval_step, zero_shot_step
from crossgap.interop import ReferenceImportError, import_reference, match_names, reference_run_dir, Targets
from crossgap.inversion import oti_features, ovi_features
from crossgap.metrics import read_result
from crossgap.steps.features import extract_step
from crossgap.safe_pickle import UnsafePickleError
from crossgap.storage import load_feature_set

TAG = "0123abcdef"


@pytest.fixture(scope="module")
def model(tiny_model_and_preprocess):
    return tiny_model_and_preprocess[0]


@pytest.fixture(scope="module")
def dtd(tmp_path_factory):
    """dtd with 2 classes: train 4, val 2, test 2 images; its manifest."""
    root = tmp_path_factory.mktemp("dtd")
    info = make_coop_dataset(root, "dtd")
    manifest = root / "manifests" / "dtd.parquet"
    prepare_manifest("dtd", root, manifest)
    return root, info, manifest


def write_reference_run(project: Path, method: str, dataset: str, split: str, names: list[str],
                        tokens: torch.Tensor, batch_size: int, steps: int, **extra) -> Path:
    """A run folder as the reference's save_tokens leaves it (plain pickles, torch.save, json.dump)."""
    folder = reference_run_dir(project, method, dataset, split, "exp1")
    folder.mkdir(parents=True)
    with open(folder / "names.pkl", "wb") as f:
        pickle.dump(names, f)
    batches = -(-len(names) // batch_size)
    with open(folder / "losses.pkl", "wb") as f:
        pickle.dump([[1.0 - 0.1 * b - 0.01 * s for s in range(steps)] for b in range(batches)], f)
    torch.save(tokens, folder / f"{method}_pseudo_tokens.pt")
    hyper = {"exp_name": "exp1", "clip_model_name": "ViT-B/32", "seed": 42, "dataset_name": dataset, "split": split,
             "learning_rate": 0.02, "batch_size": batch_size, f"{method}_steps": steps, "num_pseudo_tokens":
             tokens.shape[1], "weight_decay": 0.01, "template_sentence": "a photo of {}", "use_open_clip": False,
             **extra}
    (folder / "hyperparameters.json").write_text(json.dumps(hyper, sort_keys=True, indent=4))
    return folder


def dassl_name(root: Path, path: str) -> str:
    """The reference's DASSL image_name: f"{Path(image_path).parent.name}__{Path(image_path).name}"."""
    p = root / path
    return f"{p.parent.name}__{p.name}"


def test_oti_run_imports_in_crossgap_order_and_evaluates(dtd, tiny_spec, model, tmp_path):
    root, info, manifest = dtd
    df, meta = read_manifest(manifest)
    test_rows = select(df, "image", {"split": "test"})
    ids = test_rows["id"].tolist()
    names = [dassl_name(Path(meta["root"]), p) for p in test_rows["path"]][::-1]  # reference order: reversed
    tokens = torch.randn(len(names), 1, model.text_token_embedding_dim, generator=torch.Generator().manual_seed(1))
    run = write_reference_run(tmp_path / "ref", "oti", "dtd", "test", names, tokens, batch_size=1, steps=3)
    data = tmp_path / "data"
    path, fs = import_reference(run, manifest=manifest, dataset="dtd", model_slug="tiny", model_spec=tiny_spec,
                                tag=TAG, data_dir=data, model=model)
    assert path == data / "inversion" / "dtd" / "tiny" / f"oti-{TAG}" / "test.safetensors"
    back = load_feature_set(path)
    assert back.ids == ids  # crossgap's order, not the reference's
    torch.testing.assert_close(back.extras["pseudo_tokens"], tokens.flip(0))
    torch.testing.assert_close(back.features, oti_features(tokens.flip(0), model, template_sentence="a photo of {}"))
    # batch 0 of the reference held its first name (the last id); each sample gets its batch's mean losses
    torch.testing.assert_close(back.extras["losses"], torch.tensor([[0.9, 0.89, 0.88], [1.0, 0.99, 0.98]]))
    assert back.meta["params"] == {"steps": 3, "learning_rate": 0.02, "weight_decay": 0.01, "num_pseudo_tokens": 1,
                                   "seed": 42, "template": "a photo of {}"}
    assert back.meta["kind"] == "oti" and back.meta["model"] == "tiny" and back.meta["num_targets"] == 2
    assert back.meta["imported_from"]["naming"] == "parent__name" and back.meta["imported_from"]["set"] == "test"
    # the imported file evaluates through crossgap's retrieval step, against native gallery features
    gallery = tmp_path / "image_train.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="train", modality="image",
                 out=str(gallery), progress=False)
    result = retrieval_step(task="image_retrieval", method="oti", manifest=str(manifest), query=str(path),
                            gallery=str(gallery), out=str(tmp_path / "oti.json"), model_slug="tiny",
                            params=back.meta["params"])
    assert result["counts"]["num_queries"] == 2 and result["counts"]["gallery_size"] == 4
    assert 0.0 <= read_result(tmp_path / "oti.json")["metrics"]["mAP"] <= 100.0


def test_ovi_class_name_run_imports_as_classnames_and_classifies(dtd, tiny_spec, model, tmp_path):
    root, info, manifest = dtd
    _, meta = read_manifest(manifest)
    classnames = meta["classnames"]
    names = [c.replace(" ", "_") for c in reversed(classnames)]  # DummyClassNamesDataset: set() order
    tokens = torch.randn(len(names), 2, model.visual_token_embedding_dim, generator=torch.Generator().manual_seed(2))
    run = write_reference_run(tmp_path / "ref", "ovi", "dtd", "test", names, tokens, batch_size=64, steps=4,
                              use_class_names=True)
    out = tmp_path / "classnames.safetensors"
    path, fs = import_reference(run, manifest=manifest, dataset="dtd", model_slug="tiny", model_spec=tiny_spec, out=out,
                                model=model)
    assert path == out and fs.ids == ["class0", "class1"]  # as the pipeline's class-sentence targets
    assert fs.meta["imported_from"]["set"] == "classnames" and fs.meta["imported_from"]["naming"] == "classname"
    torch.testing.assert_close(fs.extras["pseudo_tokens"], tokens.flip(0))
    torch.testing.assert_close(fs.features, ovi_features(tokens.flip(0), model))
    assert "template" not in fs.meta["params"] and fs.meta["params"]["num_pseudo_tokens"] == 2
    images = tmp_path / "image_test.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="image",
                 out=str(images), progress=False)
    result = zero_shot_step(method="ovi", manifest=str(manifest), images=str(images), prompts=str(out),
                            out=str(tmp_path / "zs.json"), model_slug="tiny")
    assert result["counts"]["num_samples"] == 2


def test_match_names_schemes_and_failures():
    targets = Targets(["test/a/x.jpg", "test/b/y.jpg"], [Path("/r/a/x.jpg"), Path("/r/b/y.jpg")], [None, None])
    assert match_names(["y", "x", "extra"], targets) == ([1, 0], "stem")  # CUB/SOP/revisited names
    assert match_names(["b__y.jpg", "a__x.jpg"], targets) == ([1, 0], "parent__name")
    assert match_names(["x", "x", "y"], targets, naming="stem") == ([0, 2], "stem")  # first of a repeated name
    assert match_names(["n1", "n2"], targets, names_map={"n2": "test/a/x.jpg", "n1": "test/b/y.jpg"}) == (
        [1, 0], "map")
    with pytest.raises(ReferenceImportError, match=r"do not cover the 2 crossgap targets.*'stem': 1"):
        match_names(["x", "z"], targets)
    with pytest.raises(ReferenceImportError, match="unknown naming 'filename'"):
        match_names(["x"], targets, naming="filename")


def test_unsafe_or_malformed_files_are_refused(dtd, tiny_spec, model, tmp_path):
    _, _, manifest = dtd
    tokens = torch.randn(2, 1, model.text_token_embedding_dim)
    run = write_reference_run(tmp_path / "ref", "oti", "dtd", "test", ["a", "b"], tokens, batch_size=2, steps=1)
    kw = dict(manifest=manifest, dataset="dtd", model_slug="tiny", model_spec=tiny_spec, tag=TAG,
              data_dir=tmp_path / "data", model=model)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (run / "names.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(UnsafePickleError, match=r"names\.pkl: refusing to load global (posix|os)\.system"):
        import_reference(run, **kw)
    (run / "names.pkl").write_bytes(pickle.dumps(["a", "b"]))
    torch.save({"tokens": tokens, "evil": Evil()}, run / "oti_pseudo_tokens.pt")
    with pytest.raises(ReferenceImportError, match=r"oti_pseudo_tokens\.pt: not a tensor file readable with "
                                                    r"torch\.load\(weights_only=True\)"):
        import_reference(run, **kw)
    torch.save(torch.randn(2, 1, 7), run / "oti_pseudo_tokens.pt")
    with pytest.raises(ReferenceImportError, match="do not cover"):  # names 'a', 'b' name no dtd image
        import_reference(run, **kw)
    with pytest.raises(ReferenceImportError, match="tag 'v1': expected 10 lowercase hex digits"):
        import_reference(run, **kw | {"tag": "v1"})
    (run / "hyperparameters.json").unlink()
    with pytest.raises(ReferenceImportError, match=r"hyperparameters\.json: missing"):
        import_reference(run, **kw)
    with pytest.raises(ReferenceImportError, match="expected exactly one of"):
        import_reference(tmp_path, **kw)


def test_token_width_must_fit_the_model(dtd, tiny_spec, model, tmp_path):
    _, _, manifest = dtd
    df, meta = read_manifest(manifest)
    rows = select(df, "image", {"split": "test"})
    names = [dassl_name(Path(meta["root"]), p) for p in rows["path"]]
    run = write_reference_run(tmp_path / "ref", "oti", "dtd", "test", names, torch.randn(2, 1, 7), 2, 1)
    with pytest.raises(ReferenceImportError, match=r"tokens have width 7, the tiny text tower expects \d+"):
        import_reference(run, manifest=manifest, dataset="dtd", model_slug="tiny", model_spec=tiny_spec, tag=TAG,
                         data_dir=tmp_path, model=model)


def test_cli(dtd, tiny_spec, model, tmp_path, capsys):
    _, _, manifest = dtd
    df, meta = read_manifest(manifest)
    rows = select(df, "image", {"split": "test"})
    names = [dassl_name(Path(meta["root"]), p) for p in rows["path"]]
    tokens = torch.randn(2, 1, model.text_token_embedding_dim)
    run = write_reference_run(tmp_path / "ref", "oti", "dtd", "test", names, tokens, batch_size=2, steps=2)
    params = tmp_path / "params.yaml"
    params.write_text("models:\n  tiny:\n" + "".join(f"    {k}: {v}\n" for k, v in tiny_spec.items()))
    args = ["import-reference", str(run), "--dataset", "dtd", "--model", "tiny", "--manifest", str(manifest),
            "--params", str(params), "--data-dir", str(tmp_path / "data")]
    assert main(args + ["--tag", TAG]) == 0
    expected = tmp_path / "data" / "inversion" / "dtd" / "tiny" / f"oti-{TAG}" / "test.safetensors"
    assert f"wrote {expected}: 2 oti inversions of set 'test' (naming 'parent__name', 2 reference rows)" in (
        capsys.readouterr().out)
    assert np.allclose(load_feature_set(expected).extras["pseudo_tokens"].numpy(), tokens.numpy())
    assert main(args + ["--tag", "nothex0000"]) == 1
    assert main(args[:-4] + ["--params", str(tmp_path / "none.yaml"), "--tag", TAG]) == 1


def test_import_reference_loads_the_model_the_workflow_loads(tmp_path):
    """A ``pretrain: true`` entry has no ``pretrained``: the import loads the checkpoint the pipeline trained."""
    import argparse

    from crossgap.cli import _reference_model_spec

    params = tmp_path / "params.yaml"
    params.write_text("models:\n  tiny: {backend: open_clip, architecture: crossgap-tiny, pretrain: true, ovi_tokens: 2}\n")
    args = argparse.Namespace(architecture=None, params=str(params), model="tiny")
    assert _reference_model_spec(args) == {"backend": "open_clip", "architecture": "crossgap-tiny",
                                           "pretrained": "data/models/tiny/checkpoint.pt"}
