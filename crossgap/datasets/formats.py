"""Parsers for the small index files dataset layouts use (split JSON, class lists, tables, ...).

Every parser raises :class:`DatasetLayoutError` naming the file, the offending key or
line, and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from crossgap.datasets.errors import DatasetLayoutError

SplitEntries = dict[str, list[tuple[str, int, str]]]
#: Canonical split order used for manifest order.
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")


def read_json(path: Path) -> Any:
    """Parse the JSON file ``path``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetLayoutError(f"{path}: not valid JSON ({exc})") from exc


def coop_classname(name: str) -> str:
    """Class name as CoOp prompts it: underscores become spaces."""
    return name.replace("_", " ").strip()


def clean_relpath(rel: str, where: str) -> str:
    """Normalise a relative path from an index file to POSIX form; reject absolute/escaping paths."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if not rel or p.is_absolute() or ".." in p.parts:
        raise DatasetLayoutError(f"{where}: expected a relative path inside the dataset, got {rel!r}")
    return p.as_posix()


def read_split_json(path: Path) -> SplitEntries:
    """Read a CoOp ``split_zhou_*.json``: ``{split: [[relative_path, label, classname], ...]}``.

    Splits come in :data:`SPLIT_ORDER` (then any others in file order), so the manifest
    order does not depend on how the JSON was serialised; entries keep the file's order.
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"{path}: expected a JSON object {{split: [[path, label, classname], ...]}}")
    out: SplitEntries = {}
    for split, items in data.items():
        if not isinstance(items, list):
            raise DatasetLayoutError(f"{path}: key {split!r} must be a list of [path, label, classname]")
        entries = []
        for i, item in enumerate(items):
            where = f"{path}: {split}[{i}]"
            ok = (
                isinstance(item, (list, tuple))
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and not isinstance(item[1], bool)
                and isinstance(item[2], str)
            )
            if not ok or item[1] < 0:
                raise DatasetLayoutError(f"{where}: expected [relative_path, label >= 0, classname], got {item!r}")
            entries.append((clean_relpath(item[0], where), int(item[1]), item[2]))
        out[split] = entries
    rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def labels_to_names(split: SplitEntries, source: Path) -> list[str]:
    """The class-name list (index = label) implied by a split file's ``(label, classname)`` pairs.

    Labels must be ``0..K-1`` with one name each.
    """
    names: dict[int, str] = {}
    for split_name, entries in split.items():
        for rel, label, name in entries:
            if names.setdefault(label, name) != name:
                raise DatasetLayoutError(
                    f"{source}: label {label} is called both {names[label]!r} and {name!r} "
                    f"(at {split_name} entry {rel!r}); expected one class name per label"
                )
    missing = sorted(set(range(len(names))) - set(names))
    if missing:
        raise DatasetLayoutError(
            f"{source}: labels must be 0..K-1 without gaps; labels {missing[:10]} never occur (max label {max(names)})"
        )
    return [names[i] for i in range(len(names))]


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a text file as ``(line_number, stripped_text)``."""
    return [
        (n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()
    ]


def read_name_list(path: Path) -> list[str]:
    """A one-name-per-line class list (index = label); blank lines are allowed only at the end."""
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DatasetLayoutError(
                f"{path}: line {n} is empty; expected one class name per line (line index = label)"
            )
    names = [line.strip() for line in lines]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetLayoutError(f"{path}: class names must be unique, repeated: {dup[:10]}")
    return names


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], path: Path, layout: str) -> None:
    """Raise :class:`DatasetLayoutError` naming ``path`` when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DatasetLayoutError(f"{path}: missing column(s) {missing}; found {list(df.columns)}; expected {layout}")
