"""Precision settings (features.precision, inversion.precision), OVI class sentences, and determinism.

No GPU here: the CUDA branches of the dtype choice are checked on a ``torch.device("cuda")``
object (no CUDA call is made for it) with ``torch.cuda.is_bf16_supported`` patched; everything
that runs a model runs on the CPU, where every precision must compute in fp32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossgap.datasets import read_manifest
from crossgap.steps.evaluation import zero_shot_step
from crossgap.features import encode_texts
from crossgap.inversion import oti, ovi
from crossgap.steps.features import class_sentences, class_sentences_step, extract_step, prompts_step
from crossgap.steps.inversion import invert_shard_step
from crossgap.storage import load_feature_set
from crossgap.utils import autocast_context, autocast_dtype, effective_precision

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
OVI_PARAMS = {"steps": 2, "learning_rate": 0.02, "weight_decay": 0.01, "num_pseudo_tokens": 1, "seed": 3}


@pytest.fixture(scope="module")
def model(tiny_model_and_preprocess):
    return tiny_model_and_preprocess[0]


@pytest.fixture(scope="module")
def manifest(synthetic_manifest) -> Path:
    return synthetic_manifest


# --------------------------------------------------------------------------- the dtype choice
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "auto"])
def test_the_cpu_computes_fp32_whatever_is_asked(precision):
    assert autocast_dtype(CPU, precision) is None
    assert effective_precision(CPU, precision) == "fp32"
    assert isinstance(autocast_context(CPU, precision), type(autocast_context(CPU, "fp32")))


@pytest.mark.parametrize("bf16_supported, precision, expected", [
    (True, "fp32", None), (True, "fp16", torch.float16), (True, "bf16", torch.bfloat16),
    (False, "fp16", torch.float16), (False, "fp32", None),
    (True, "auto", torch.bfloat16), (False, "auto", torch.float16),  # library callers without a setting
])
def test_cuda_follows_the_setting(monkeypatch, bf16_supported, precision, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert autocast_dtype(CUDA, precision) == expected
    assert effective_precision(CUDA, precision) == {None: "fp32", torch.float16: "fp16",
                                                     torch.bfloat16: "bf16"}[expected]


def test_bf16_on_a_gpu_without_it_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ValueError, match="precision 'bf16': Tesla V100 does not support bfloat16"):
        autocast_dtype(CUDA, "bf16")
    with pytest.raises(ValueError, match="precision must be one of .* got 'fp8'"):
        autocast_dtype(CPU, "fp8")


def test_fp32_on_cuda_is_no_autocast():
    # the baselines' default: no autocast context at all (nothing touches CUDA to build it)
    assert isinstance(autocast_context(CUDA, "fp32"), type(autocast_context(CPU, "fp32")))


# --------------------------------------------------------------------------- runs on the CPU
def test_inversion_on_the_cpu_is_the_same_for_every_precision(model):
    targets = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))  # test-vit-tiny: D = 32
    runs = {p: ovi(targets, model, steps=3, seed=5, precision=p, progress=False) for p in ("fp16", "bf16", "fp32")}
    for p in ("bf16", "fp32"):
        torch.testing.assert_close(runs[p][0], runs["fp16"][0], rtol=0, atol=0)
        torch.testing.assert_close(runs[p][1], runs["fp16"][1], rtol=0, atol=0)
    a = oti(targets, model, steps=2, seed=5, precision="fp16", progress=False)
    b = oti(targets, model, steps=2, seed=5, precision="fp32", progress=False)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_feature_files_record_the_precision(manifest, tiny_spec, model, tmp_path):
    out = tmp_path / "image_test.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="image",
                 out=str(out), progress=False, precision="bf16")
    meta = load_feature_set(out).meta
    assert meta["precision"] == "fp32" and meta["precision_requested"] == "bf16"  # the CPU ran fp32
    prompts = tmp_path / "prompts.safetensors"
    prompts_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, out=str(prompts))
    assert load_feature_set(prompts).meta["precision_requested"] == "fp32"


def test_shards_record_precision_and_determinism(manifest, tiny_spec, tmp_path):
    prompts = tmp_path / "targets.safetensors"
    class_sentences_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, template="a photo of {}",
                         out=str(prompts))
    out = tmp_path / "shard.safetensors"
    # rule params without the later fields: the job fills in precision fp16 and the OVI template
    invert_shard_step(method="ovi", features=str(prompts), out=str(out), model_slug="tiny", model_spec=tiny_spec,
                      shard=0, num_shards=1, shard_size=64, params=OVI_PARAMS, progress=False)
    meta = load_feature_set(out).meta
    assert meta["params"] == {**OVI_PARAMS, "template": "a photo of {}", "precision": "fp16",
                              "underscores_as_spaces": False}
    assert meta["precision"] == "fp32" and meta["precision_requested"] == "fp16"
    assert meta["deterministic"] is torch.are_deterministic_algorithms_enabled()


# --------------------------------------------------------------------------- OVI zero-shot targets
def test_class_sentences_read_underscores_as_spaces():
    assert class_sentences(["sea_lion", "golden retriever"], "a photo of {}") == [
        "a photo of sea lion", "a photo of golden retriever"]
    with pytest.raises(ValueError, match="inversion.ovi.template: expected exactly one"):
        class_sentences(["x"], "a photo")


def test_class_sentence_features_classify_images_one_per_class(manifest, tiny_spec, model, tmp_path):
    _, meta = read_manifest(manifest)
    out = tmp_path / "class_sentences.safetensors"
    class_sentences_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, template="a picture of {}",
                         out=str(out))
    fs = load_feature_set(out)
    names = meta["classnames"]
    assert fs.ids == [f"class{c}" for c in range(len(names))]
    assert fs.meta["sentences"] == [f"a picture of {n.replace('_', ' ')}" for n in names]
    torch.testing.assert_close(fs.features, encode_texts(model, fs.meta["sentences"], progress=False))
    # a [C, D] file is a zero-shot classifier of its own (one feature per class, no template average)
    images = tmp_path / "image_test.safetensors"
    extract_step(manifest=str(manifest), model_slug="tiny", model_spec=tiny_spec, split="test", modality="image",
                 out=str(images), progress=False)
    result = zero_shot_step(method="ovi", manifest=str(manifest), images=str(images), prompts=str(out),
                            out=str(tmp_path / "zs.json"), model_slug="tiny")
    assert result["counts"]["num_samples"] == 3


# --------------------------------------------------------------------------- determinism
def _job(code: str, env: dict[str, str] | None = None) -> str:
    full = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"} | (env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=full).stdout.strip()


def test_job_setup_turns_deterministic_algorithms_on_before_cuda(tmp_path):
    log = tmp_path / "job.log"
    on = ("import os, torch; from crossgap.runtime import job_setup; "
          f"job_setup({str(log)!r}, 1, deterministic=True); "
          "print(torch.are_deterministic_algorithms_enabled(), os.environ['CUBLAS_WORKSPACE_CONFIG'])")
    assert _job(on) == "True :4096:8"
    assert "deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG=:4096:8" in log.read_text()
    assert _job(on, {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == "True :16:8"  # the other deterministic setting
    off = ("import os, torch; from crossgap.runtime import job_setup; "
           f"job_setup({str(log)!r}, 1); "
           "print(torch.are_deterministic_algorithms_enabled(), os.environ.get('CUBLAS_WORKSPACE_CONFIG'))")
    assert _job(off) == "False None"


def test_determinism_is_refused_once_cuda_is_initialised(monkeypatch):
    from crossgap.runtime.job import set_deterministic

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="inversion.deterministic: CUDA is already initialised"):
        set_deterministic()
    assert not torch.are_deterministic_algorithms_enabled()
