"""A failed write names the file and, when the disk is full, says so with the free bytes left (issue 21).

The writers are monkeypatched to fail as they do on a full file system (``OSError(ENOSPC)``,
torch.save's ``RuntimeError: ... unexpected pos ...``, safetensors' ``StorageFull``); the free
space is monkeypatched too, so nothing here fills a real disk.
"""

from __future__ import annotations

import errno
import io
import pickle
import shutil
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch
from fixtures_own_data import make_imagefolder
from safetensors import SafetensorError

import crossgap.datasets.manifest as manifest
import crossgap.storage as storage
import crossgap.synthetic_generator as synthetic_generator
import crossgap.training as training
from crossgap.datasets import configured_adapter
from crossgap.storage import FeatureSet, save_feature_set
from crossgap.utils import atomic_path, write_json
from crossgap.writes import WriteError

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def free(monkeypatch):
    """Set the free bytes ``shutil.disk_usage`` reports (``free.set(n)``)."""
    state = SimpleNamespace(bytes=1_234_567)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - state.bytes, state.bytes))
    state.set = lambda n: setattr(state, "bytes", n)
    return state


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_enospc_in_a_plain_write_names_the_file_and_the_free_bytes(tmp_path, free, monkeypatch):
    target = tmp_path / "out" / "summary.json"
    target.parent.mkdir()
    (target.parent / "other.txt").write_text("kept")

    def full(self, data, **kw):
        io.FileIO(self, "w").write(b"{\"half")  # a partial temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(type(target), "write_text", full)
    with pytest.raises(WriteError) as info:
        write_json(target, {"a": 1})
    err = info.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.space and err.free_bytes == 1_234_567
    assert str(err).startswith(f"{target}: cannot write the file: the file system is full (1,234,567 bytes free "
                               f"in {target.parent}; OSError: [Errno 28] No space left on device: ")
    assert str(err).endswith("); nothing was written under this name: free some space and rerun")
    assert err.filename == str(target)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), str(back), back.errno, back.free_bytes) == (WriteError, str(err), errno.ENOSPC, 1_234_567)
    assert leftovers(target.parent) == ["other.txt"]  # no final file, no temp file


def _fake_trainer():
    return SimpleNamespace(model=torch.nn.Linear(2, 2), step_rows=[])


def _summary():
    return {"epochs": 1, "model_name": "crossgap-tiny", "final_loss": 0.5, "seconds_per_epoch": 1.0}


def test_torch_save_of_the_pretraining_checkpoint_on_a_full_disk(tmp_path, free, monkeypatch):
    def save(obj, path):  # what torch.save says when the disk fills mid-file (after a partial write)
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4050")

    monkeypatch.setattr(torch, "save", save)
    free.set(4096)
    checkpoint = tmp_path / "models" / "tiny" / "checkpoint.pt"
    with pytest.raises(WriteError) as info:
        training._save_run(_fake_trainer(), checkpoint, _summary(), [], None, None)
    message = str(info.value)
    assert message == (f"{checkpoint}: cannot write the file: the file system is full (4,096 bytes free in "
                       f"{checkpoint.parent}; RuntimeError: [enforce fail at inline_container.cc:672] . unexpected "
                       "pos 4160 vs 4050); nothing was written under this name: free some space and rerun")
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, RuntimeError)
    assert leftovers(checkpoint.parent) == []


def test_torch_writer_failure_with_space_left_is_not_called_a_full_disk(tmp_path, free, monkeypatch):
    def save(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save)
    free.set(50 * 2**30)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(WriteError) as info:
        training._save_run(_fake_trainer(), checkpoint, _summary(), [], None, None)
    assert str(info.value) == (f"{checkpoint}: cannot write the file (RuntimeError: [enforce fail at "
                               "inline_container.cc:672] . unexpected pos 704 vs 598); nothing was written under "
                               "this name")
    assert not info.value.space and info.value.free_bytes is None and leftovers(tmp_path) == []


def test_safetensors_storage_full_when_saving_features(tmp_path, free, monkeypatch):
    def save_file(tensors, filename, metadata=None):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(storage, "save_file", save_file)
    out = tmp_path / "image_test.safetensors"
    with pytest.raises(WriteError, match=r"image_test.safetensors: cannot write the file: the file system is full "
                       r"\(1,234,567 bytes free in .*; SafetensorError: Error while serializing: IoError"):
        save_feature_set(out, FeatureSet(torch.zeros(2, 3), ["a", "b"]))
    assert leftovers(tmp_path) == []


def test_manifest_parquet_on_a_full_disk(tmp_path, free, monkeypatch):
    df, meta = configured_adapter("imagefolder").build(make_imagefolder(tmp_path / "pets").path)

    def write_table(table, where):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(manifest.pq, "write_table", write_table)
    out = tmp_path / "m" / "pets.parquet"
    with pytest.raises(WriteError, match=r"pets.parquet: cannot write the file: the file system is full "
                       r"\(1,234,567 bytes free in .*/m; OSError: \[Errno 28\] No space left on device\)"):
        manifest.write_manifest(out, df, meta)
    assert leftovers(out.parent) == ["pets.skipped.json"]  # the sidecar is written first; the manifest not at all


def test_synthetic_dataset_on_a_full_disk_leaves_no_partial_folder(tmp_path, free, monkeypatch):
    calls = {"n": 0}
    real = synthetic_generator.Image.Image.save

    def save(self, fp, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return real(self, fp, *args, **kw)

    monkeypatch.setattr(synthetic_generator.Image.Image, "save", save)
    with pytest.raises(WriteError) as info:
        synthetic_generator.generate_synthetic(tmp_path, num_train=4, num_test=2)
    assert str(info.value).startswith(f"{tmp_path / 'synthetic'}: cannot write the file: the file system is full "
                                      "(1,234,567 bytes free")
    assert leftovers(tmp_path) == []


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(ValueError, match="^not a write$"):
        with atomic_path(tmp_path / "x.json"):
            raise ValueError("not a write")
    with pytest.raises(FileNotFoundError) as info:  # an input that is missing is not a failed write
        with atomic_path(tmp_path / "y.json"):
            open(tmp_path / "missing-input.txt").read()
    assert not isinstance(info.value, WriteError)
    with pytest.raises(WriteError) as info:  # EIO on our own file: named, not called a full disk
        with atomic_path(tmp_path / "z.json") as tmp:
            raise OSError(errno.EIO, "Input/output error", str(tmp))
    assert str(info.value) == (f"{tmp_path / 'z.json'}: cannot write the file (OSError: [Errno 5] Input/output "
                               f"error: '{info.value.__cause__.filename}'); nothing was written under this name")
    assert info.value.errno == errno.EIO and leftovers(tmp_path) == []


def test_llm_summary_cache_append_on_a_full_disk(tmp_path, free, monkeypatch):
    import crossgap.datasets.llm_summaries as llm

    cache = llm.SummaryCache(tmp_path / "cache.jsonl")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(llm.os, "fsync", fsync)
    with pytest.raises(WriteError, match=r"cache.jsonl: cannot write the file: the file system is full "
                       r"\(1,234,567 bytes free"):
        cache.add({"k1": ("corpus/0", "a summary")})
