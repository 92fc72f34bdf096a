"""Labelled text corpora queried with one sentence per class: ``imdb_text``, ``newsgroup_text``.

Both have a ``query`` split of class descriptions (label = the class) and a corpus whose
texts are relevant to the description of their own class (``relevance: label``).

* ``imdb_text``: ``IMDB_Reviews/IMDB_Dataset.csv`` (columns ``review``, ``sentiment``;
  50,000 rows). Queries "a positive review of a movie." / "a negative review of a movie.";
  corpus split ``corpus`` (row ids ``corpus/<CSV row index>``, texts stripped).
* ``newsgroup_text``: the 20 Newsgroups "bydate" test split as scikit-learn stores it under
  its data home (``<dataroot>/scikit_learn_data``, or ``<dataroot>`` itself):
  ``20news_home/20news-bydate-test/<class>/<file>`` (the extracted archive), or else the
  cache scikit-learn keeps after download, ``20news-bydate_py3.pkz`` (read with the restricted
  unpickler of :mod:`crossgap.safe_pickle`; its ``Bunch`` objects need scikit-learn). Texts are decoded as latin-1 and
  stripped, headers kept (``fetch_20newsgroups`` defaults). Rows are in the order
  ``fetch_20newsgroups(subset="test")`` returns them (its two seeded shuffles are
  reproduced), and ids are ``test/<that index>``, so per-index artefacts (e.g. summaries)
  line up. Queries: the class descriptions of :data:`NEWSGROUP_DESCRIPTIONS`.
"""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetLayoutError, DatasetNotFoundError, FileProblem
from crossgap.datasets.files import read_text_file
from crossgap.datasets.formats import require_columns
from crossgap.datasets.protocols import ProtocolDict, make_protocol, retrieval
from crossgap.datasets.registry import register_dataset
from crossgap.datasets.rows import Row, plain_text_row
from crossgap.safe_pickle import restricted_loads

log = logging.getLogger(__name__)


def label_protocol(query_split: str, gallery_split: str) -> ProtocolDict:
    """Text retrieval only: class descriptions -> corpus texts; relevant = same label."""
    return make_protocol(text_retrieval=retrieval(query_split, gallery_split))


IMDB_QUERIES: dict[str, str] = {
    "positive": "a positive review of a movie.",
    "negative": "a negative review of a movie.",
}


@register_dataset
class IMDBTextAdapter(DatasetAdapter):
    """IMDB movie reviews (Kaggle ``IMDB Dataset.csv``), 2 sentiment classes."""

    slug = "imdb_text"
    folder = "IMDB_Reviews"
    unit = "texts"
    templates: tuple[str, ...] = ()
    long_texts = True  # reviews longer than a CLIP context: the DAG prepares them (crossgap.plan)
    expected_sizes = {"query": 2, "corpus": 50000}
    num_classes = 2
    protocol = label_protocol("query", "corpus")
    required = ("IMDB_Dataset.csv",)
    layout = (
        "<dataroot>/IMDB_Reviews/\n"
        "|-- IMDB_Dataset.csv   # header 'review,sentiment'; sentiment is 'positive' or 'negative'"
    )

    def classnames(self, folder: Path) -> list[str]:
        """``["positive", "negative"]``."""
        return list(IMDB_QUERIES)

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """The two query sentences, then every review (CSV order)."""
        path = folder / "IMDB_Dataset.csv"
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DatasetLayoutError(f"{path}: not a readable CSV ({exc})") from exc
        require_columns(table, ("review", "sentiment"), path, "a header 'review,sentiment'")
        label_of = {name: i for i, name in enumerate(classnames)}
        bad = ~table["sentiment"].isin(list(label_of))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatasetLayoutError(
                f"{path}: data row {row} has sentiment {table['sentiment'].iloc[row]!r}; expected one of {classnames}"
            )
        rows = [plain_text_row("query", name, IMDB_QUERIES[name], label_of[name], name) for name in classnames]
        for i, (review, sentiment) in enumerate(zip(table["review"], table["sentiment"])):
            rows.append(plain_text_row("corpus", str(i), review.strip(), label_of[sentiment], sentiment))
        return rows


#: One description sentence per newsgroup (the query texts of the paper's reference code).
NEWSGROUP_DESCRIPTIONS: dict[str, str] = {
    "alt.atheism": "Atheism, philosophy, and the absence of belief in deities.",
    "comp.graphics": "Computer graphics, rendering, and visual technologies.",
    "comp.os.ms-windows.misc": "Microsoft Windows: software, settings, and troubleshooting.",
    "comp.sys.ibm.pc.hardware": "IBM PC hardware: components, peripherals, and systems.",
    "comp.sys.mac.hardware": "Mac hardware: devices, accessories, and configurations.",
    "comp.windows.x": "X Windows: graphical interfaces and Unix system configuration.",
    "misc.forsale": "Buying and selling products like electronics and furniture.",
    "rec.autos": "Automobiles: car models, maintenance, and industry updates.",
    "rec.motorcycles": "Motorcycles: bike models, culture, and maintenance tips.",
    "rec.sport.baseball": "Baseball: games, teams, players, and statistics.",
    "rec.sport.hockey": "Hockey: NHL, teams, games, and techniques.",
    "sci.crypt": "Cryptography: encryption, security, and data protection.",
    "sci.electronics": "Electronics: circuits, components, and device technology.",
    "sci.med": "Medicine: healthcare, treatments, and medical research.",
    "sci.space": "Space: exploration, astronomy, and scientific discoveries.",
    "soc.religion.christian": "Christianity: beliefs, theology, and practices.",
    "talk.politics.guns": "Gun politics: control, rights, and related issues.",
    "talk.politics.mideast": "Middle East politics: conflicts, diplomacy, and events.",
    "talk.politics.misc": "Politics: issues, governance, and international relations.",
    "talk.religion.misc": "Religion and spirituality: diverse beliefs and philosophies.",
}
TEST_FOLDER = "20news_home/20news-bydate-test"
CACHE_FILE = "20news-bydate_py3.pkz"
#: scikit-learn's seeds: ``load_files(random_state=0)`` when caching, ``fetch_20newsgroups(random_state=42)``
SKLEARN_SEEDS: tuple[int, int] = (0, 42)


def sklearn_order(n: int) -> np.ndarray:
    """Position in sorted-file order of each item of ``fetch_20newsgroups`` order (both shuffles)."""
    order = np.arange(n)
    for seed in SKLEARN_SEEDS:
        perm = np.arange(n)
        np.random.RandomState(seed).shuffle(perm)
        order = order[perm]
    return order


@register_dataset
class NewsgroupTextAdapter(DatasetAdapter):
    """20 Newsgroups, test split, in scikit-learn's data home."""

    slug = "newsgroup_text"
    folder = "scikit_learn_data"
    unit = "texts"
    templates: tuple[str, ...] = ()
    long_texts = True  # posts longer than a CLIP context: the DAG prepares them (crossgap.plan)
    expected_sizes = {"query": 20, "test": 7532}
    num_classes = 20
    protocol = label_protocol("query", "test")
    layout = (
        "<dataroot>/scikit_learn_data/     # scikit-learn's data home (or <dataroot> itself)\n"
        "|-- 20news_home/20news-bydate-test/<class>/<file>   # the extracted 20news-bydate archive, or\n"
        f"|-- {CACHE_FILE}           # the cache fetch_20newsgroups() leaves after downloading"
    )

    def dataset_dir(self, dataroot: str | os.PathLike) -> Path:
        """``<dataroot>/scikit_learn_data`` if it exists, else ``<dataroot>`` when it is a data home."""
        root = Path(dataroot).expanduser().absolute()
        for candidate in (root / self.folder, root):
            if (candidate / TEST_FOLDER).is_dir() or (candidate / CACHE_FILE).is_file():
                return candidate
        return root / self.folder

    def locate(self, dataroot: str | os.PathLike) -> Path:
        """The data home holding the test folder or the cache."""
        folder = self.dataset_dir(dataroot)
        if (folder / TEST_FOLDER).is_dir() or (folder / CACHE_FILE).is_file():
            return folder
        root = Path(dataroot).expanduser().absolute()
        looked = [str(p) for base in (root / self.folder, root) for p in (base / TEST_FOLDER, base / CACHE_FILE)]
        raise DatasetNotFoundError(
            f"{self.slug}: dataset not found under dataroot {root}; looked for: {', '.join(looked)}\n"
            f"Expected layout:\n{self.layout}"
        )

    def _read_folder(self, folder: Path) -> tuple[list[str], list[tuple[str, int, Path]]]:
        test = folder / TEST_FOLDER
        names = sorted(e.name for e in os.scandir(test) if e.is_dir())
        files = [
            (name, label, Path(test, name, f))
            for label, name in enumerate(names)
            for f in sorted(os.listdir(test / name))
        ]
        return names, files

    def _read_cache(self, folder: Path) -> tuple[list[str], list[str], list[int]]:
        path = folder / CACHE_FILE
        try:
            import sklearn  # noqa: F401  (the pickle holds sklearn Bunch objects)
        except ImportError as exc:
            raise DatasetLayoutError(
                f"{path}: reading scikit-learn's cache needs scikit-learn; install it or extract "
                f"20news-bydate.tar.gz into {folder / '20news_home'}"
            ) from exc
        try:
            cache = restricted_loads(codecs.decode(path.read_bytes(), "zlib_codec"), path)
            test = cache["test"]
            return list(test.target_names), list(test.data), [int(t) for t in test.target]
        except Exception as exc:  # noqa: BLE001 - any failure means the cache is unusable
            raise DatasetLayoutError(
                f"{path}: not a readable 20 Newsgroups cache ({type(exc).__name__}: {exc})"
            ) from exc

    def classnames(self, folder: Path) -> list[str]:
        """Newsgroup names, sorted (scikit-learn's ``target_names``)."""
        names = self._read_folder(folder)[0] if (folder / TEST_FOLDER).is_dir() else self._read_cache(folder)[0]
        unknown = sorted(set(names) - set(NEWSGROUP_DESCRIPTIONS))
        if unknown:
            raise DatasetLayoutError(
                f"{folder}: unknown newsgroup(s) {unknown}; expected {sorted(NEWSGROUP_DESCRIPTIONS)}"
            )
        return names

    def rows(self, folder: Path, classnames: list[str]) -> list[Row]:
        """The rows of :meth:`read`."""
        return self.read(folder, classnames)[0]

    def read(self, folder: Path, classnames: list[str], *, check_images: bool = True, workers: int | None = None
             ) -> tuple[list[Row], list[FileProblem]]:
        """Class descriptions, then the test posts in ``fetch_20newsgroups`` order; unreadable post files
        are problems (their row has text ``""``)."""
        rows = [
            plain_text_row("query", name, NEWSGROUP_DESCRIPTIONS[name], i, name) for i, name in enumerate(classnames)
        ]
        problems: list[FileProblem] = []
        if (folder / TEST_FOLDER).is_dir():
            _, files = self._read_folder(folder)
            # fetch order = load_files' seeded shuffle of sorted files, then fetch's own shuffle
            for index, position in enumerate(sklearn_order(len(files))):
                name, label, path = files[position]
                text, problem = read_text_file(path, f"test/{index}", encoding="latin-1")
                if problem:
                    problems.append(problem)
                rows.append(plain_text_row("test", str(index), text.strip(), label, name))
        else:
            names, data, targets = self._read_cache(folder)
            perm = np.arange(len(data))
            np.random.RandomState(SKLEARN_SEEDS[1]).shuffle(perm)  # the cache is already load_files-shuffled
            for index, position in enumerate(perm):
                label = targets[position]
                rows.append(plain_text_row("test", str(index), data[position].strip(), label, names[label]))
        return rows, problems
