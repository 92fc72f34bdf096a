"""``crossgap datasets init``: propose, check and write the ``datasets:`` entry of your own data.

:func:`propose_entry` asks the adapter what the data at a path looks like
(:meth:`~crossgap.datasets.options.ConfigurableAdapter.detect`), applies the user's
overrides, validates the options and checks the data (:func:`check_dataset`); the entry
carries the image counts per split as ``sizes`` (the workflow plans inversion jobs from
them without reading data). :func:`entry_yaml` prints it and :func:`append_entry` adds it
under ``datasets:`` of a params file, keeping the rest of the file (comments included)
byte for byte, and writing atomically.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from crossgap.datasets.checks import DatasetReport, check_dataset
from crossgap.datasets.errors import DatasetError
from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES
from crossgap.datasets.options import (
    ConfigurableAdapter,
    DatasetOptionsError,
    configurable_adapters,
    options_to_dict,
    parse_options,
)
from crossgap.utils import atomic_path

_TOP_KEY = re.compile(r"^datasets:\s*(#.*)?$")


class ParamsFileError(DatasetError, ValueError):
    """The params file cannot take the entry (no mapping, name taken, flow style)."""


@dataclass
class Proposal:
    """What ``init`` found: the entry's name, the entry itself and the check report."""

    name: str
    entry: dict[str, Any]
    report: DatasetReport


def default_name(path: Path) -> str:
    """A dataset name from a folder or file name: letters, digits and ``_`` (params' key pattern)."""
    stem = path.stem if path.suffix and not path.is_dir() else path.name
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "mydata"
    return name if name[0].isalpha() else f"d_{name}"


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> ``{key: YAML value}`` (``[a, b]``, ``null``, numbers, strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DatasetOptionsError(f"--set {item!r}: expected KEY=VALUE, e.g. --set query_split=val")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def propose_entry(
    adapter: str,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_images: bool = True,
    workers: int | None = None,
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
) -> Proposal:
    """The ``datasets:`` entry for the data at ``path`` read by ``adapter``, checked.

    Raises :class:`DatasetError` when the layout cannot be recognised or the options are
    invalid; data problems (unreadable files, missing columns) are in ``report``.
    """
    adapters = configurable_adapters()
    if adapter not in adapters:
        raise DatasetOptionsError(f"init: adapter {adapter!r} is not one for your own data; use one of "
                                  f"{sorted(adapters)}")
    base: ConfigurableAdapter = adapters[adapter]
    source = Path(path).expanduser()
    if not source.exists():
        raise DatasetOptionsError(f"init: {source} does not exist")
    dataroot, detected = base.detect(source)
    options = parse_options(base.options_type, {**detected, **(overrides or {})}, f"{adapter} options")
    name = name or default_name(source)
    report = check_dataset(type(base)(options, name), dataroot, check_images=check_images, workers=workers,
                           truncated_images=truncated_images)
    entry: dict[str, Any] = {"adapter": adapter, "dataroot": os.path.normpath(str(dataroot)),
                             "options": options_to_dict(options)}
    if report.counts:
        entry["sizes"] = dict(report.counts)
    report.dataset = name
    return Proposal(name, entry, report)


class _EntryDumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists (``splits: [train, test]``)."""


_EntryDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def entry_yaml(name: str, entry: Mapping[str, Any], indent: int = 2) -> str:
    """The entry as YAML lines under ``datasets:`` (indented by ``indent``)."""
    text = yaml.dump({name: dict(entry)}, Dumper=_EntryDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)
    return "".join(" " * indent + line if line.strip() else line for line in text.splitlines(keepends=True))


def append_entry(params: str | os.PathLike, name: str, entry: Mapping[str, Any]) -> None:
    """Add ``name: entry`` at the end of the ``datasets:`` block of the params file (created if absent).

    Everything else in the file stays as it was; the result is re-read to check that it
    holds exactly the old datasets plus the new one, then written atomically.
    """
    path = Path(params)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    data = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ParamsFileError(f"{path}: expected a YAML mapping at the top level")
    datasets = data.get("datasets") or {}
    if not isinstance(datasets, dict):
        raise ParamsFileError(f"{path}: 'datasets' must be a mapping of dataset name -> entry")
    if name in datasets:
        raise ParamsFileError(f"{path}: datasets already has an entry {name!r}; pick another with --name")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _TOP_KEY.match(line.rstrip("\n"))), None)
    if start is None:
        if "datasets" in data:
            raise ParamsFileError(f"{path}: 'datasets:' is written in flow style; add the entry by hand")
        sep = "" if not text or text.endswith("\n") else "\n"
        new = text + sep + "\ndatasets:\n" + entry_yaml(name, entry)
    else:
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1  # keep blank lines that separate the block from the next one
        block = [line for line in lines[start + 1 : end] if line.strip() and not line.lstrip().startswith("#")]
        indent = len(block[0]) - len(block[0].lstrip()) if block else 2
        body = entry_yaml(name, entry, indent)
        if end > 0 and not lines[end - 1].endswith("\n"):
            body = "\n" + body
        new = "".join(lines[:end]) + body + "".join(lines[end:])
    check = yaml.safe_load(new)
    expected = {**data, "datasets": {**datasets, name: dict(entry)}}
    if check != expected:
        raise ParamsFileError(f"{path}: could not insert the entry without changing other keys; add it by hand")
    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")
