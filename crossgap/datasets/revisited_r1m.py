"""Revisited Oxford/Paris with the R1M distractors in the gallery: ``roxford5k_r1m``, ``rparis6k_r1m``.

Layout: revisitop's own (filipradenovic/revisitop ``python/download.py``, ``download_distractors``:
``<data>/datasets/revisitop1m/jpg/`` from 100 archives plus the list ``revisitop1m.txt``; and
``python/dataset.py``, ``configdataset``: image ``i`` is ``jpg/`` + ``imlist[i]``, the list entries
carrying their extension, which ``matlab/configdataset.m`` adds as ``.jpg`` when an entry has
none)::

    <dataroot>/roxford5k/gnd_roxford5k.pkl     as for roxford5k (crossgap.datasets.revisited)
    <dataroot>/roxford5k/jpg/<name>.jpg
    <dataroot>/revisitop1m/revisitop1m.txt     one distractor per line, relative to jpg/
    <dataroot>/revisitop1m/jpg/<entry>         the distractor images

The revisitop repository does not state the number of distractors; the published set
(R1M of Radenović et al., "Revisiting Oxford and Paris", CVPR 2018) has 1,001,001 images:
:data:`R1M_PUBLISHED`, checked against the list (a warning, like every count) and shown by
``crossgap datasets check``.

Rows: the queries and database images of the plain adapter, with the same ids (``query/<q>.jpg``,
``database/<im>.jpg``, so the ground truth and the queries' inversions are the plain dataset's),
then one ``database`` row per list entry, id ``database/revisitop1m/<entry>``, in list order.
Manifest paths are relative to ``<dataroot>`` (``roxford5k/jpg/...``, ``revisitop1m/jpg/...``).

The reference implementation (miccunifi/Cross-the-Gap ``src/datasets/roxford_rparis.py``,
``find_existing_distractors``) always appends to the gallery every file found two levels under
``revisitop1m/jpg/`` (directory-listing order, no list check) and needs ``revisitop1m.txt`` to exist:
its ROxford/RParis numbers are these variants' (with whatever distractors were on disk), not the
plain adapters'.  Here missing distractors are missing files (``skip_corrupt`` to drop them).
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from crossgap.datasets.base import Inspection
from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError
from crossgap.datasets.registry import register
from crossgap.datasets.revisited import SIZES, RevisitedAdapter, read_gnd
from crossgap.datasets.rows import Row, image_row

log = logging.getLogger(__name__)

R1M_FOLDER = "revisitop1m"
R1M_LIST = "revisitop1m.txt"
R1M_PUBLISHED = 1_001_001
DISTRACTOR_PREFIX = f"database/{R1M_FOLDER}/"  # id prefix of the distractor rows


def read_distractor_list(path: Path) -> list[str]:
    """Entries of ``revisitop1m.txt`` (relative to ``jpg/``), ``.jpg`` added where an entry has no suffix."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetLayoutError(f"{path}: cannot read the distractor list ({exc})") from exc
    entries = [line.strip() for line in lines if line.strip()]
    entries = [e if PurePosixPath(e).suffix else f"{e}.jpg" for e in entries]  # as matlab/configdataset.m
    bad = [e for e in entries if e.startswith("/") or ".." in PurePosixPath(e).parts]
    if bad:
        raise DatasetLayoutError(f"{path}: entries must be paths relative to jpg/, got e.g. {bad[:3]}")
    seen: set[str] = set()
    dup = [e for e in entries if e in seen or seen.add(e)]
    if dup:
        raise DatasetLayoutError(f"{path}: {len(dup)} entries are listed twice, e.g. {dup[:3]}")
    if not entries:
        raise DatasetLayoutError(f"{path}: the distractor list is empty")
    return entries


class RevisitedR1MAdapter(RevisitedAdapter):
    """``<name>_r1m``: the revisited dataset ``name`` with the revisitop1m distractors added to its gallery."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.slug = f"{name}_r1m"
        self.expected_sizes = {"query": SIZES[name]["query"], "database": SIZES[name]["database"] + R1M_PUBLISHED}
        self.layout = (
            f"{self.layout}\n"
            f"<dataroot>/{R1M_FOLDER}/   # next to {name}/, as revisitop's download_distractors leaves it\n"
            f"|-- {R1M_LIST}   # one distractor per line, relative to jpg/ (published: {R1M_PUBLISHED:,})\n"
            "|-- jpg/<entry>        # every listed image"
        )

    def distractor_dir(self, folder: Path) -> Path:
        """``<dataroot>/revisitop1m`` for the dataset folder ``<dataroot>/<name>``."""
        return folder.parent / R1M_FOLDER

    def locate(self, dataroot: Any) -> Path:
        """The dataset folder, once it and the distractor list and folder exist (else a layout error)."""
        folder = super().locate(dataroot)
        r1m = self.distractor_dir(folder)
        missing = [str(p) for p in (r1m / R1M_LIST, r1m / "jpg") if not p.exists()]
        if missing:
            raise DatasetNotFoundError(
                f"{self.slug}: distractors not found under dataroot {folder.parent}; looked for: "
                f"{', '.join(missing)}\nExpected layout:\n{self.layout}"
            )
        return folder

    def image_root(self, folder: Path) -> Path:
        """The dataroot: manifest paths start with ``<name>/jpg/`` or ``revisitop1m/jpg/``."""
        return folder.parent

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Queries, database images (ids as the plain adapter), then the distractors in list order."""
        imlist, qimlist, _ = read_gnd(folder / self.gnd_file)
        jpg = f"{self.folder}/jpg"
        entries = read_distractor_list(self.distractor_dir(folder) / R1M_LIST)
        return (
            [image_row("query", f"{jpg}/{q}.jpg", -1, None, key=f"{q}.jpg") for q in qimlist]
            + [image_row("database", f"{jpg}/{im}.jpg", -1, None, key=f"{im}.jpg") for im in imlist]
            + [image_row("database", f"{R1M_FOLDER}/jpg/{e}", -1, None, key=f"{R1M_FOLDER}/{e}") for e in entries]
        )

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """The distractor count against the published 1,001,001."""
        n = int(ins.frame["id"].str.startswith(DISTRACTOR_PREFIX).sum())
        if n == R1M_PUBLISHED:
            return []
        return [f"{self.slug}: {R1M_FOLDER}/{R1M_LIST} lists {n:,} distractors, published {R1M_PUBLISHED:,}"]

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """The plain ``gnd`` plus ``distractors``: list file, rows kept, published count."""
        meta = super().extra_meta(folder, df)
        meta["distractors"] = {
            "list": str(self.distractor_dir(folder) / R1M_LIST),
            "count": int(df["id"].str.startswith(DISTRACTOR_PREFIX).sum()),
            "published": R1M_PUBLISHED,
        }
        return meta


for _name in SIZES:
    register(RevisitedR1MAdapter(_name))
