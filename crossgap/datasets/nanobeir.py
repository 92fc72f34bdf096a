"""NanoBEIR (Zeta Alpha's 50-query subsets of BEIR): seven ``nano_*`` text retrieval datasets.

Layout: ``<dataroot>/NanoBEIR/<Name>/`` with ``corpus.parquet``, ``queries.parquet`` and
``qrels.parquet``, where ``<Name>`` is the Hugging Face repository name (``NanoClimateFEVER``)
or the bare BEIR name (``ClimateFEVER``). A snapshot of the Hugging Face repository works
too: each file may instead be a folder of Parquet shards (``corpus/train-00000-of-00001.parquet``).

Fields are BEIR's: corpus and queries have ``_id`` and ``text`` (and optionally ``title``);
qrels have ``query-id``, ``corpus-id`` and optionally ``score`` (default 1; relevant when > 0).
The row text is the ``text`` field alone, as the reference implementation encodes it
(``src/datasets/nano_beir_text.py``); non-empty corpus titles are kept in the metadata key
``titles`` (``{corpus row id: title}``), and the text-preparation step prepends them on request
(``datasets.<name>.text.title: true``, :mod:`crossgap.datasets.textprep`). Rows: the queries (split ``queries``, ids
``queries/<_id>``) then the corpus (split ``corpus``, ids ``corpus/<_id>``), unlabelled.
The protocol is ``relevance: "qrels"``: metadata ``qrels`` lists
``[query row id, corpus row id, score]`` (see :func:`crossgap.datasets.selection.qrels_pairs`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from crossgap.datasets.base import DatasetAdapter, Inspection
from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError
from crossgap.datasets.formats import require_columns
from crossgap.datasets.protocols import make_protocol, retrieval
from crossgap.datasets.registry import register
from crossgap.datasets.rows import Row, plain_text_row

log = logging.getLogger(__name__)

#: BEIR name -> corpus size of its Nano version (every one has 50 queries).
NANO_CORPUS_SIZES: dict[str, int] = {
    "ClimateFEVER": 3408,
    "DBPedia": 6045,
    "FEVER": 4996,
    "NFCorpus": 2953,
    "NQ": 5035,
    "SCIDOCS": 2210,
    "SciFact": 2919,
}
PARTS: tuple[str, ...] = ("corpus", "queries", "qrels")
NANO_PROTOCOL = make_protocol(text_retrieval=retrieval("queries", "corpus", "qrels"))


def read_parquet_part(folder: Path, part: str) -> pd.DataFrame:
    """``<part>.parquet``, or the shards ``<part>/*.parquet`` concatenated (sorted by name)."""
    single = folder / f"{part}.parquet"
    files = [single] if single.is_file() else sorted((folder / part).glob("**/*.parquet"))
    if not files:
        raise DatasetNotFoundError(f"{folder}: neither {single.name} nor {part}/*.parquet exists")
    frames = []
    for path in files:
        try:
            frames.append(pd.read_parquet(path))
        except (OSError, pa.ArrowException) as exc:
            raise DatasetLayoutError(f"{path}: not a readable Parquet file ({exc})") from exc
    return pd.concat(frames, ignore_index=True)


class NanoBEIRAdapter(DatasetAdapter):
    """One NanoBEIR dataset."""

    folder = "NanoBEIR"
    unit = "texts"
    templates: tuple[str, ...] = ()
    protocol = NANO_PROTOCOL
    #: documents longer than a CLIP context: the DAG runs the text-preparation step (crossgap.plan)
    long_texts = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.slug = f"nano_{name.lower()}"
        self.expected_sizes = {"queries": 50, "corpus": NANO_CORPUS_SIZES[name]}
        self.layout = (
            f"<dataroot>/NanoBEIR/Nano{name}/    # or NanoBEIR/{name}/\n"
            "|-- corpus.parquet     # _id, text (, title)    or corpus/train-*.parquet\n"
            "|-- queries.parquet    # _id, text              or queries/train-*.parquet\n"
            "|-- qrels.parquet      # query-id, corpus-id (, score)"
        )

    def _candidates(self, dataroot: str | os.PathLike) -> list[Path]:
        base = Path(dataroot).expanduser().absolute() / self.folder
        return [base / f"Nano{self.name}", base / self.name]

    @staticmethod
    def _complete(folder: Path) -> bool:
        return all((folder / f"{p}.parquet").is_file() or (folder / p).is_dir() for p in PARTS)

    def dataset_dir(self, dataroot: str | os.PathLike) -> Path:
        """The first candidate folder holding all three parts (else the first candidate)."""
        found = [c for c in self._candidates(dataroot) if self._complete(c)]
        return found[0] if found else self._candidates(dataroot)[0]

    def locate(self, dataroot: str | os.PathLike) -> Path:
        """The dataset folder; the error lists both candidate folders and the missing parts."""
        folder = self.dataset_dir(dataroot)
        if self._complete(folder):
            return folder
        looked = [
            f"{c / p}.parquet"
            for c in self._candidates(dataroot)
            for p in PARTS
            if not (c / p).is_dir() and not (c / f"{p}.parquet").is_file()
        ]
        raise DatasetNotFoundError(
            f"{self.slug}: dataset not found under dataroot {Path(dataroot).expanduser().absolute()}; "
            f"looked for: {', '.join(looked)}\nExpected layout:\n{self.layout}"
        )

    def classnames(self, folder: Path) -> list[str]:
        """No classes: relevance comes from the qrels."""
        return []

    def _texts(self, folder: Path, part: str) -> pd.DataFrame:
        """``_id``, ``text`` and ``title`` (stripped, ``""`` when absent) of one part."""
        df = read_parquet_part(folder, part)
        require_columns(df, ("_id", "text"), folder / part, "BEIR fields '_id', 'text' (and optionally 'title')")
        title = df["title"].fillna("").astype(str).str.strip() if "title" in df.columns else ""
        df = df.assign(_id=df["_id"].astype(str), text=df["text"].fillna("").astype(str), title=title)
        dup = df["_id"][df["_id"].duplicated()]
        if len(dup):
            raise DatasetLayoutError(f"{folder / part}: '_id' must be unique; repeated: {sorted(set(dup))[:10]}")
        return df

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """Query rows then corpus rows, in file order."""
        queries, corpus = self._texts(folder, "queries"), self._texts(folder, "corpus")
        rows = [plain_text_row("queries", i, t.strip()) for i, t in zip(queries["_id"], queries["text"])]
        rows += [plain_text_row("corpus", i, t.strip()) for i, t in zip(corpus["_id"], corpus["text"])]
        return rows

    def qrels(self, folder: Path) -> tuple[list[list[Any]], int]:
        """``[query row id, corpus row id, score]`` per qrels line, and how many lines name unknown ids
        (those are dropped)."""
        df = read_parquet_part(folder, "qrels")
        require_columns(df, ("query-id", "corpus-id"), folder / "qrels", "BEIR fields 'query-id', 'corpus-id'")
        scores = df["score"] if "score" in df.columns else pd.Series(1, index=df.index)
        query_ids = set(self._texts(folder, "queries")["_id"])
        corpus_ids = set(self._texts(folder, "corpus")["_id"])
        out, unknown = [], 0
        for q, c, s in zip(df["query-id"].astype(str), df["corpus-id"].astype(str), scores):
            if q in query_ids and c in corpus_ids:
                out.append([f"queries/{q}", f"corpus/{c}", int(s) if float(s).is_integer() else float(s)])
            else:
                unknown += 1
        return out, unknown

    def extra_warnings(self, ins: Inspection) -> list[str]:
        """Qrels naming unknown ids (dropped) and queries without any relevant document (not evaluated)."""
        qrels, unknown = self.qrels(ins.folder)
        out = []
        if unknown:
            out.append(f"{self.slug}: {unknown} qrels line(s) name unknown query or corpus ids; dropped")
        judged = {q for q, _, s in qrels if s > 0}
        missing = [q for q in ins.frame.loc[ins.frame["split"] == "queries", "id"] if q not in judged]
        if missing:
            out.append(f"{self.slug}: {len(missing)} queries have no relevant document, e.g. {missing[:3]}")
        return out

    def extra_meta(self, folder: Path, df: pd.DataFrame) -> dict[str, Any]:
        """``qrels`` and the ``titles`` of the corpus rows kept (non-empty ones)."""
        corpus = self._texts(folder, "corpus")
        kept = set(df["id"])
        titles = {f"corpus/{i}": t for i, t in zip(corpus["_id"], corpus["title"]) if t and f"corpus/{i}" in kept}
        return {"qrels": self.qrels(folder)[0], "titles": titles}


for _name in NANO_CORPUS_SIZES:
    register(NanoBEIRAdapter(_name))
