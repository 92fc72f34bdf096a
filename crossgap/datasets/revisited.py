"""Revisited Oxford and Paris (Radenović et al., CVPR 2018): ``roxford5k``, ``rparis6k``.

Layout (as the revisitop download script leaves it)::

    <dataroot>/roxford5k/gnd_roxford5k.pkl   dict: imlist, qimlist, gnd
    <dataroot>/roxford5k/jpg/<name>.jpg      database and query images

``imlist`` / ``qimlist`` are image names without extension; ``gnd`` has one dict per query
with ``easy``, ``hard``, ``junk`` (indices into ``imlist``) and ``bbx`` (the query's
``[x1, y1, x2, y2]`` box). Rows: the 70 queries (split ``query``), then the database
(split ``database``: 4,993 / 6,322 images), both unlabelled (label ``-1``).

The protocol is ``relevance: "revisited"`` with the ground truth stored by row id in the
metadata key ``gnd`` (see :mod:`crossgap.datasets.selection`). The paper encodes the full
query image; the ``*_bbx`` variants (``roxford5k_bbx``, ``rparis6k_bbx``) declare
``query_crop: "bbx"``, the standard protocol's crop of each query to its box (apply it
with :func:`crossgap.datasets.selection.query_boxes`). The 1M distractors are not included.

The ``.pkl`` is read with an unpickler that only accepts plain containers, numbers,
strings and numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError
from crossgap.datasets.protocols import make_protocol, retrieval
from crossgap.datasets.registry import register
from crossgap.datasets.rows import Row, image_row
from crossgap.safe_pickle import UnsafePickleError, restricted_load

log = logging.getLogger(__name__)

SIZES: dict[str, dict[str, int]] = {
    "roxford5k": {"query": 70, "database": 4993},
    "rparis6k": {"query": 70, "database": 6322},
}


def load_plain_pickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only plain data and numpy arrays."""
    try:
        return restricted_load(path)
    except UnsafePickleError as exc:
        raise DatasetLayoutError(f"{path}: not a readable ground-truth pickle ({exc})") from exc


def _index_list(value: Any, n: int, where: str) -> list[int]:
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise DatasetLayoutError(f"{where}: expected a list of integer indices") from exc
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise DatasetLayoutError(f"{where}: indices {bad[:10]} are outside the database (0..{n - 1})")
    return out


def read_gnd(path: Path) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(imlist, qimlist, gnd)`` of a ``gnd_<name>.pkl``, checked; gnd lists become int lists."""
    data = load_plain_pickle(path)
    if not isinstance(data, dict) or not all(k in data for k in ("imlist", "qimlist", "gnd")):
        raise DatasetLayoutError(f"{path}: expected a dict with keys 'imlist', 'qimlist', 'gnd'")
    imlist, qimlist = [str(x) for x in data["imlist"]], [str(x) for x in data["qimlist"]]
    if len(data["gnd"]) != len(qimlist):
        raise DatasetLayoutError(f"{path}: 'gnd' has {len(data['gnd'])} entries but 'qimlist' has {len(qimlist)}")
    gnd = []
    for i, entry in enumerate(data["gnd"]):
        where = f"{path}: gnd[{i}] (query {qimlist[i]!r})"
        if not isinstance(entry, dict):
            raise DatasetLayoutError(f"{where}: expected a dict with 'easy', 'hard', 'junk', 'bbx'")
        item: dict[str, Any] = {}
        for key in ("easy", "hard", "junk"):
            if key not in entry:
                raise DatasetLayoutError(f"{where}: key {key!r} is missing")
            item[key] = _index_list(entry[key], len(imlist), f"{where}['{key}']")
        bbx = entry.get("bbx")
        if bbx is not None:
            try:
                bbx = [float(v) for v in bbx]
            except (TypeError, ValueError) as exc:
                raise DatasetLayoutError(f"{where}['bbx']: expected [x1, y1, x2, y2]") from exc
            if len(bbx) != 4:
                raise DatasetLayoutError(f"{where}['bbx']: expected 4 numbers, got {len(bbx)}")
        item["bbx"] = bbx
        gnd.append(item)
    for name, lst in (("imlist", imlist), ("qimlist", qimlist)):
        if len(set(lst)) != len(lst):
            raise DatasetLayoutError(f"{path}: {name!r} lists an image twice")
    return imlist, qimlist, gnd


class RevisitedAdapter(DatasetAdapter):
    """One revisited dataset (``name`` = ``roxford5k`` or ``rparis6k``), optionally with query crops."""

    images_dir = "jpg"
    templates: tuple[str, ...] = ()
    num_classes = None

    def __init__(self, name: str, *, crop: bool = False) -> None:
        self.name = name
        self.slug = f"{name}_bbx" if crop else name
        self.folder = name
        self.crop = crop
        self.expected_sizes = dict(SIZES[name])
        self.gnd_file = f"gnd_{name}.pkl"
        self.required = (self.gnd_file, "jpg")
        self.protocol = make_protocol(
            image_retrieval=retrieval("query", "database", "revisited", query_crop="bbx" if crop else None)
        )
        self.layout = (
            f"<dataroot>/{name}/\n"
            f"|-- {self.gnd_file}   # pickled dict: imlist, qimlist, gnd (easy/hard/junk/bbx per query)\n"
            "|-- jpg/<name>.jpg     # every image of imlist and qimlist"
        )

    def classnames(self, folder: Path) -> list[str]:
        """No classes: relevance comes from ``gnd``."""
        return []

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Query rows (qimlist order), then database rows (imlist order)."""
        imlist, qimlist, _ = read_gnd(folder / self.gnd_file)
        return [image_row("query", f"{q}.jpg", -1, None) for q in qimlist] + [
            image_row("database", f"{im}.jpg", -1, None) for im in imlist
        ]

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """``gnd`` by row id: ``{"query", "easy", "hard", "junk", "bbx"}`` per query."""
        imlist, qimlist, gnd = read_gnd(folder / self.gnd_file)
        db_ids = [f"database/{im}.jpg" for im in imlist]
        out = [
            {
                "query": f"query/{q}.jpg",
                **{key: [db_ids[i] for i in entry[key]] for key in ("easy", "hard", "junk")},
                "bbx": entry["bbx"],
            }
            for q, entry in zip(qimlist, gnd)
        ]
        if self.crop and any(e["bbx"] is None for e in out):
            raise DatasetLayoutError(
                f"{folder / self.gnd_file}: some queries have no 'bbx' but {self.slug} crops queries"
            )
        return {"gnd": out, "gnd_source": str(folder / self.gnd_file)}


for _name in SIZES:
    register(RevisitedAdapter(_name))
    register(RevisitedAdapter(_name, crop=True))
