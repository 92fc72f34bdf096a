"""Published numbers shipped with crossgap (``crossgap/paper/data/published.csv``), each with its source.

One row per published figure: ``source`` (a key of :data:`SOURCES`), ``task``, ``scope``
(``dataset``: one dataset's score; ``average``: a mean over an average group of
:mod:`crossgap.paper.groups`, metric ``paper``: each dataset's paper metric), ``name`` (the dataset
key or the average key), ``model`` (the paper grid's model slug, ``params/paper.yaml``), ``method``
(crossgap's method name: ``image``/``text``/``standard`` native, ``oti``, ``ovi``), ``metric``
(the crossgap metric it is compared with), ``value`` (in %, one decimal as published), ``protocol``
(``as run``: the source's protocol is the one crossgap runs; ``not stated``: the source does not say,
e.g. which ROxford/RParis setup: compared, and marked ``‡``) and ``note`` (what the source says; shown
beside every comparison).

A run's value is set beside a published one only when dataset (or average), model, method and
metric are the same; the model is matched by its slug, so a run whose ``clip_b32`` is another
checkpoint compares wrongly: the paper grid's slugs are the contract.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

from crossgap.methods import TASK_METHODS
from crossgap.paper.groups import AVERAGES

log = logging.getLogger(__name__)

COLUMNS = ("source", "task", "scope", "name", "model", "method", "metric", "value", "protocol", "note")
PROTOCOLS = ("as run", "not stated")
SCOPES = ("dataset", "average")
#: averages the published figures name beyond the tables' own (the modality-gap experiment's 5 datasets)
PUBLISHED_ONLY_AVERAGES = {"gap5": ("cub2011", "sop", "roxford5k", "rparis6k", "stanford_cars")}


@dataclass(frozen=True)
class Source:
    """Where figures come from, and whether each was checked against that source here."""

    citation: str
    location: str
    checked: str


SOURCES: dict[str, Source] = {
    "P": Source("Mistretta et al., Cross the Gap, ICLR 2025: official poster",
                "assets/CrossTheGap_POSTER.pdf in miccunifi/Cross-the-Gap",
                "every value read off the rendered poster (its bar labels and the modality-gap table): all equal"),
    "S": Source("Herzog & Wang, Reevaluating the Intra-Modal Misalignment Hypothesis in CLIP, CVPR 2026 "
                "(arXiv 2603.16100), Table 3",
                "arXiv 2603.16100, Table 3 'image-to-image retrieval results (mAP) following [Cross the Gap]'",
                "not checked against the paper (its table is not readable from this machine); a secondary "
                "source, most likely copied from Cross the Gap"),
}


@dataclass(frozen=True)
class Published:
    """One published figure (the columns of the CSV)."""

    source: str
    task: str
    scope: str
    name: str
    model: str
    method: str
    metric: str
    value: float
    protocol: str
    note: str


def _check(row: Mapping[str, str], where: str) -> Published:
    missing = [c for c in COLUMNS if c not in row or row[c] is None]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; expected {list(COLUMNS)}")
    if row["source"] not in SOURCES:
        raise ValueError(f"{where}: source {row['source']!r} is not one of {sorted(SOURCES)}")
    if row["task"] not in TASK_METHODS:
        raise ValueError(f"{where}: task {row['task']!r} is not one of {sorted(TASK_METHODS)}")
    if row["method"] not in TASK_METHODS[row["task"]]:
        raise ValueError(f"{where}: method {row['method']!r} is not a method of {row['task']}")
    if row["scope"] not in SCOPES:
        raise ValueError(f"{where}: scope {row['scope']!r}; expected one of {list(SCOPES)}")
    if row["scope"] == "average":
        known = {a.key for a in AVERAGES.get(row["task"], ())} | set(PUBLISHED_ONLY_AVERAGES)
        if row["name"] not in known or row["metric"] != "paper":
            raise ValueError(f"{where}: an average must name one of {sorted(known)} with metric 'paper'; "
                             f"got {row['name']!r} / {row['metric']!r}")
    if row["protocol"] not in PROTOCOLS:
        raise ValueError(f"{where}: protocol {row['protocol']!r}; expected one of {list(PROTOCOLS)}")
    try:
        value = float(row["value"])
    except ValueError:
        raise ValueError(f"{where}: value {row['value']!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{where}: value {value} is not a percentage")
    return Published(row["source"], row["task"], row["scope"], row["name"], row["model"], row["method"],
                     row["metric"], value, row["protocol"], row["note"])


def load_published(path: str | Path | None = None) -> dict[tuple[str, str, str, str, str], Published]:
    """``{(task, scope, name, model, method): Published}`` of ``path`` (default: the shipped CSV).

    ``ValueError`` naming the file and line for a bad row or a figure given twice.
    """
    if path is None:
        text = resources.files("crossgap.paper").joinpath("data/published.csv").read_text(encoding="utf-8")
        where = "crossgap/paper/data/published.csv"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{where}: header {reader.fieldnames}; expected {list(COLUMNS)}")
    out: dict[tuple[str, str, str, str, str], Published] = {}
    for line, row in enumerate(reader, start=2):
        figure = _check(row, f"{where}:{line}")
        key = (figure.task, figure.scope, figure.name, figure.model, figure.method)
        if key in out:
            raise ValueError(f"{where}:{line}: {'/'.join(key)} is given twice")
        out[key] = figure
    return out
