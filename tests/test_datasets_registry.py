"""Registering adapters: the protocol and unit are checked at registration, naming the adapter and the key;
the protocol constructors; listing folders without hidden entries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from crossgap.datasets import ManifestError, UnknownDatasetError, get_adapter, list_datasets, register
from crossgap.datasets import registry
from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.files import visible_entries
from crossgap.datasets.options import ConfigurableAdapter
from crossgap.datasets.protocols import (
    LABEL_RETRIEVAL_PROTOCOL,
    ZERO_SHOT_ONLY,
    classification_protocol,
    group_retrieval,
    make_protocol,
    retrieval,
    validate_adapter_protocol,
)
from crossgap.datasets.registry import register_dataset


class _Toy(DatasetAdapter):
    slug = "toy_registry_test"

    def classnames(self, folder: Path) -> list[str]:
        return []

    def rows(self, folder: Path, classnames: list[str]) -> list[dict]:
        return []


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize(
    "protocol, key, what",
    [
        ({"image_retrieval": {"query": {"select": "all"}, "gallery": {"split": "train"}, "relevance": "label"}},
         "protocol['image_retrieval']['query']", "string 'split'"),
        ({"image_retrieval": {"query": {"split": "test"}, "gallery": {"split": "train"}, "relevance": "colour"}},
         "protocol['image_retrieval']", "'relevance' must be one of"),
        ({"text_retrieval": {"query": {"split": "test", "select": "first"}, "gallery": {"split": "test"}}},
         "protocol['text_retrieval']['query']", "'select' must be one of"),
        ({"image_retrieval": {"split": "test"}}, "protocol['image_retrieval']", "needs both 'query' and 'gallery'"),
        ({"zero_shot": {"query": {"split": "test"}, "gallery": {"split": "train"}}},
         "protocol['zero_shot']", "expected one selection spec"),
        ({"zero_shot": "test"}, "protocol['zero_shot']", "expected an object or null"),
        ({"modality_gap": {"split": 3}}, "protocol['modality_gap']", "string 'split'"),
        (["image_retrieval"], "'protocol' must be an object", "got ['image_retrieval']"),
    ],
)
def test_bad_protocol_fails_at_registration(scratch_registry, protocol, key, what):
    adapter = _Toy()
    adapter.protocol = protocol
    with pytest.raises(ManifestError) as exc:
        register(adapter)
    message = str(exc.value)
    assert message.startswith(f"dataset adapter 'toy_registry_test' ({__name__}._Toy)")
    assert key in message and what in message
    with pytest.raises(UnknownDatasetError):  # nothing was registered
        get_adapter("toy_registry_test")


def test_bad_protocol_fails_when_the_decorated_class_is_defined(scratch_registry):
    with pytest.raises(ManifestError, match=r"dataset adapter 'toy_decorated' .*protocol\['zero_shot'\]"):

        @register_dataset
        class Decorated(_Toy):
            slug = "toy_decorated"
            protocol = {"zero_shot": {"split": None}}

    assert "toy_decorated" not in list_datasets()


def test_configurable_adapter_protocol_is_checked_for_every_configuration(scratch_registry):
    @dataclass(frozen=True)
    class Options:
        split: str = "test"

    class Configured(ConfigurableAdapter):
        slug = "toy_configured"
        options_type = Options

        @classmethod
        def options_protocol(cls, options):
            if options.split == "test":
                return make_protocol(zero_shot="test")
            return {"zero_shot": {"query": {"split": options.split}, "gallery": {"split": options.split}}}

        classnames = _Toy.classnames
        rows = _Toy.rows

    adapter = register(Configured())
    with pytest.raises(ManifestError, match=r"dataset adapter 'toy_configured' configured for 'mine': "
                                            r"protocol\['zero_shot'\]: expected one selection spec"):
        adapter.configure({"split": "val"}, name="mine")


def test_unit_is_checked_and_a_good_adapter_registers(scratch_registry):
    adapter = _Toy()
    adapter.unit = "pixels"
    with pytest.raises(ValueError, match=r"dataset adapter 'toy_registry_test' .*'unit' must be one of"):
        register(adapter)
    adapter.unit = "texts"
    assert register(adapter) is adapter and get_adapter("toy_registry_test") is adapter
    with pytest.raises(ValueError, match="already registered"):
        register(_Toy())


def test_every_registered_protocol_is_valid():
    assert len(list_datasets()) > 30
    for slug in list_datasets():
        validate_adapter_protocol(get_adapter(slug).protocol, slug)


def test_protocol_constructors():
    assert LABEL_RETRIEVAL_PROTOCOL == {
        "image_retrieval": {
            "query": {"split": "test", "select": "all"},
            "gallery": {"split": "train", "select": "all"},
            "relevance": "label",
        },
        "text_retrieval": None,
        "zero_shot": {"split": "test", "select": "all"},
    }
    assert ZERO_SHOT_ONLY == {
        "image_retrieval": None,
        "text_retrieval": None,
        "zero_shot": {"split": "test", "select": "all"},
    }
    assert classification_protocol("val") == make_protocol(image_retrieval=retrieval("val", "val"), zero_shot="val")
    assert make_protocol(text_retrieval=group_retrieval("test"), modality_gap="test") == {
        "image_retrieval": None,
        "text_retrieval": {
            "query": {"split": "test", "select": "first_per_group"},
            "gallery": {"split": "test", "select": "rest_per_group"},
            "relevance": "group",
        },
        "zero_shot": None,
        "modality_gap": {"split": "test"},
    }
    assert retrieval("query", "database", "revisited", query_crop=None)["query_crop"] is None


def test_visible_entries_skip_hidden_and_sort_by_name(tmp_path):
    for name in ("b", ".DS_Store", "a.jpg", ".hidden_dir", "C"):
        (tmp_path / name).mkdir() if "dir" in name or name == "b" else (tmp_path / name).write_text("x")
    assert [e.name for e in visible_entries(tmp_path)] == ["C", "a.jpg", "b"]
