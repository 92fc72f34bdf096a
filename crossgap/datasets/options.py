"""Datasets configured from ``params.yaml``: typed options, configured adapters, protocols from params alone.

The paper's adapters have a fixed layout and protocol. The bring-your-own-data adapters
(``imagefolder``, ``captions``, ``wds``) take an ``options:`` mapping in their ``datasets:``
entry, parsed into a frozen dataclass (:func:`parse_options`), and their protocol follows
from those options alone, so the workflow's DAG is known without reading any data::

    datasets:
      pets:
        adapter: imagefolder
        dataroot: /data/pets          # the dataset folder itself
        options: {splits: [train, test], query_split: test, gallery_split: train}

:func:`adapter_for` turns such an entry into a configured adapter and
:func:`dataset_protocol` gives its protocol (``crossgap.plan`` calls it). A configurable
adapter's protocol may hold one key besides the tasks: ``"modality_gap": {"split": S}``,
meaning "pair each image of split ``S`` with its first caption" (image and text features of
``S`` are needed); caption-less datasets leave it out and pair images with class prompts.
"""

from __future__ import annotations

import copy

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

import pandas as pd

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetError
from crossgap.datasets.protocols import validate_adapter_protocol
from crossgap.datasets.registry import get_adapter, list_datasets

T = TypeVar("T")

#: Split names end up in file names and Snakemake wildcards (``split="[A-Za-z0-9]+"``); ``all`` means every split.
SPLIT_NAME = re.compile(r"^[A-Za-z0-9]+$")
RESERVED_SPLITS: frozenset[str] = frozenset({"all"})
#: Zero-shot prompt used when a dataset states none.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


class DatasetOptionsError(DatasetError, ValueError):
    """A ``datasets.<name>.options`` mapping is malformed: the message names the key and what was expected."""


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {type(None): "null", str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (str, int, float, bool, None, tuple[X, ...], unions)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except DatasetOptionsError:
                continue
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            item = typing.get_args(tp)[0]
            return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise DatasetOptionsError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def parse_options(cls: type[T], raw: Mapping[str, Any] | None, where: str = "options") -> T:
    """The frozen dataclass ``cls`` from the mapping ``raw`` (``None``: all defaults).

    Unknown keys and values of the wrong type raise :class:`DatasetOptionsError` naming
    ``where.<key>``; the dataclass's ``__post_init__`` checks relations between keys.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise DatasetOptionsError(f"{where}: expected a mapping of option names to values, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise DatasetOptionsError(f"{where}: unknown option(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in raw.items()}
    try:
        return cls(**values)
    except DatasetOptionsError as exc:
        raise DatasetOptionsError(f"{where}: {exc}") from None


def options_to_dict(options: Any) -> dict[str, Any]:
    """A dataclass of options as plain YAML/JSON values (tuples become lists)."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(options).items()
    }


def check_split_name(name: str, key: str) -> str:
    """``name`` if it can be a split (letters and digits, not ``all``), else :class:`DatasetOptionsError`."""
    if not SPLIT_NAME.match(name) or name in RESERVED_SPLITS:
        raise DatasetOptionsError(
            f"{key}: split name {name!r} must consist of letters and digits only (it becomes part of file "
            f"names and Snakemake wildcards) and must not be {sorted(RESERVED_SPLITS)}"
        )
    return name


def check_query_gallery(query: str, gallery: str | None, query_key: str = "query_split") -> None:
    """The evaluated split (option ``query_key``) and the optional ``gallery_split`` are valid split names."""
    check_split_name(query, query_key)
    if gallery is not None:
        check_split_name(gallery, "gallery_split")


def check_templates(templates: tuple[str, ...], key: str) -> tuple[str, ...]:
    """Zero-shot templates: at least one, each with exactly one ``{}``."""
    if not templates:
        raise DatasetOptionsError(f"{key}: expected at least one template containing '{{}}'")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise DatasetOptionsError(f"{key}: every template must contain '{{}}' exactly once, bad: {bad}")
    return templates


def resolve_under(folder: Path, rel: str) -> Path:
    """``rel`` relative to ``folder`` (absolute paths are kept)."""
    path = Path(rel).expanduser()
    return path if path.is_absolute() else folder / path


# --------------------------------------------------------------------------- configurable adapters


class ConfigurableAdapter(DatasetAdapter):
    """An adapter whose layout and protocol come from typed options (``datasets.<name>.options``).

    Subclasses set :attr:`options_type` (a frozen dataclass with defaults), implement
    :meth:`options_protocol` (options -> protocol, without reading data) and may override
    :meth:`templates_for` and :meth:`detect` (what ``crossgap datasets init`` proposes).
    ``crossgap.plan`` calls :meth:`protocol_for` with the whole ``datasets:`` entry.
    The data root *is* the dataset folder (``folder = ""``).
    """

    folder = ""
    options_type: ClassVar[type]

    def __init__(self, options: Any = None, name: str | None = None) -> None:
        self.options = options if options is not None else self.options_type()
        #: the dataset's name in params.yaml: the manifest's ``dataset`` (results and summaries are keyed by it)
        self.name = name or self.slug
        self.protocol = self.options_protocol(self.options)
        validate_adapter_protocol(self.protocol, f"dataset adapter {self.slug!r} configured for {self.name!r}")
        self.templates = self.templates_for(self.options)

    @classmethod
    def options_protocol(cls, options: Any) -> dict[str, Any]:
        """The protocol implied by ``options`` alone (see :mod:`crossgap.datasets.protocols`)."""
        raise NotImplementedError

    def protocol_for(self, dataset_cfg: Mapping[str, Any], name: str = "<dataset>") -> dict[str, Any]:
        """The protocol of the ``datasets:`` entry ``dataset_cfg`` (its ``options``); reads no data."""
        return dict(self.configure(dataset_cfg.get("options"), f"datasets.{name}.options").protocol)

    @classmethod
    def templates_for(cls, options: Any) -> tuple[str, ...]:
        """Zero-shot templates stated by ``options`` (data-dependent adapters refine them in ``build``)."""
        return tuple(getattr(options, "templates", None) or DEFAULT_TEMPLATES)

    def configure(self, raw: Mapping[str, Any] | None, where: str = "options",
                  name: str | None = None) -> "ConfigurableAdapter":
        """A new adapter of this type configured by the ``options`` mapping ``raw`` (dataset ``name``)."""
        return type(self)(parse_options(self.options_type, raw, where), name)

    def build(self, dataroot: str | os.PathLike, **kwargs: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
        """As the base class; the manifest's ``dataset`` is :attr:`name` (``adapter`` names the class).

        Two entries of one adapter (two image folders) thus keep apart in results and summaries.
        """
        df, meta = super().build(dataroot, **kwargs)  # type: ignore[misc]
        meta["dataset"] = self.name
        return df, meta

    @classmethod
    def detect(cls, path: Path) -> tuple[Path, dict[str, Any]]:
        """``(dataroot, options)`` proposed for the data at ``path`` (``crossgap datasets init``)."""
        raise NotImplementedError


def configured_adapter(adapter: str, options: Mapping[str, Any] | None = None, where: str = "options",
                       name: str | None = None) -> DatasetAdapter:
    """The registered adapter ``adapter`` configured by ``options``, for the dataset ``name`` of params.

    Adapters without options (the paper's) accept only an absent or empty mapping (and keep
    their slug as the manifest's ``dataset``).
    """
    base = get_adapter(adapter)
    if isinstance(base, ConfigurableAdapter):
        return base.configure(options, where, name)
    if options:
        raise DatasetOptionsError(
            f"{where}: adapter {adapter!r} takes no options (options are for the adapters "
            f"{sorted(configurable_adapters())}), got {sorted(options)}"
        )
    return base


def configurable_adapters() -> dict[str, ConfigurableAdapter]:
    """Registered adapters that take options, by slug."""
    return {s: a for s in list_datasets() if isinstance(a := get_adapter(s), ConfigurableAdapter)}


def with_sizes(adapter: DatasetAdapter, sizes: Mapping[str, int] | None, where: str = "sizes") -> DatasetAdapter:
    """``adapter`` expecting ``sizes`` (a ``datasets:`` entry's items per split) instead of its own, if given.

    A copy is returned (registered adapters are shared); counts are then checked against them
    and a truncated shard's loss is counted from them.
    """
    if not sizes:
        return adapter
    if not isinstance(sizes, Mapping) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
        raise DatasetOptionsError(f"{where}: expected a mapping split -> number of items, got {sizes!r}")
    out = copy.copy(adapter)
    out.expected_sizes = {str(k): int(v) for k, v in sizes.items()}
    return out


def adapter_for(dataset_cfg: Mapping[str, Any], name: str = "<dataset>") -> DatasetAdapter:
    """The adapter of a ``datasets:`` entry of params.yaml (``adapter`` + optional ``options`` and ``sizes``)."""
    if not isinstance(dataset_cfg, Mapping) or not isinstance(dataset_cfg.get("adapter"), str):
        raise DatasetOptionsError(f"datasets.{name}: expected a mapping with a string 'adapter', got {dataset_cfg!r}")
    adapter = configured_adapter(dataset_cfg["adapter"], dataset_cfg.get("options"), f"datasets.{name}.options",
                                 None if name == "<dataset>" else name)
    return with_sizes(adapter, dataset_cfg.get("sizes"), f"datasets.{name}.sizes")


def dataset_protocol(dataset_cfg: Mapping[str, Any], name: str = "<dataset>") -> dict[str, Any]:
    """The protocol of a ``datasets:`` entry, from params alone (no data is read).

    Tasks map to their selection spec or ``None``; configurable adapters may add
    ``"modality_gap": {"split": S}`` (see the module docstring).
    """
    return dict(adapter_for(dataset_cfg, name).protocol)
