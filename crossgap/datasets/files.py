"""Dataset files on disk: listing folders, checking listed images, reading text files.

:func:`visible_entries` is how every adapter lists a folder (hidden entries such as
``.DS_Store`` are skipped); :func:`scan_files` checks that the files a manifest lists exist
and decode (every adapter's ``inspect``); :func:`read_text_file` reads one text file of a
text dataset, turning an unreadable one into a :class:`~crossgap.datasets.errors.FileProblem`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from crossgap.datasets.errors import FileProblem
from crossgap.datasets.images import decode_error, reclassify_truncated, truncated_loading

CHUNK = 256  # files per thread-pool task


def visible_entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    """Entries of ``folder`` whose name does not start with ``.``, sorted by name."""
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def default_workers() -> int:
    """Threads used to decode images (PIL releases the GIL while decoding)."""
    return max(1, min(8, os.cpu_count() or 1))


def _probe(path: Path, check_images: bool) -> tuple[str, str] | None:
    if not path.is_file():
        return "missing", "file does not exist"
    if check_images:
        reason = decode_error(path)  # the caller holds truncated_loading(False)
        if reason is not None:
            return "corrupt", reason
    return None


def scan_files(
    root: Path,
    items: Iterable[tuple[str, str]],
    *,
    check_images: bool = True,
    workers: int | None = None,
    desc: str = "checking images",
) -> list[FileProblem]:
    """Check each ``(id, relative_path)`` under ``root``; return problems in input order.

    A file is ``missing`` when it is not a regular file; with ``check_images``, ``truncated``
    when PIL decodes it only with ``LOAD_TRUNCATED_IMAGES`` (:mod:`crossgap.datasets.images`) and
    ``corrupt`` when it cannot decode it even so.
    """
    items = list(items)
    paths = [root / rel for _, rel in items]
    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    results: list[tuple[str, str] | None] = []
    with (
        truncated_loading(False),  # strict decoding for the whole pass (threads read PIL's flag)
        ThreadPoolExecutor(max_workers=workers or default_workers()) as pool,
        tqdm(total=len(paths), desc=desc, unit="img", disable=None, leave=False) as bar,
    ):
        for chunk_results in pool.map(lambda chunk: [_probe(p, check_images) for p in chunk], chunks):
            results += chunk_results
            bar.update(len(chunk_results))
    problems = [
        FileProblem(id=item_id, path=str(path), kind=res[0], reason=res[1])
        for (item_id, _), path, res in zip(items, paths, results)
        if res is not None
    ]
    return reclassify_truncated(problems) if check_images else problems


def read_text_file(path: Path, row_id: str, encoding: str = "utf-8") -> tuple[str, FileProblem | None]:
    """The content of ``path``, or ``""`` and a :class:`FileProblem` when it cannot be read."""
    try:
        return path.read_bytes().decode(encoding), None
    except FileNotFoundError:
        return "", FileProblem(row_id, str(path), "missing", "file does not exist")
    except (OSError, UnicodeDecodeError) as exc:
        return "", FileProblem(row_id, str(path), "corrupt", f"{type(exc).__name__}: {exc}")
