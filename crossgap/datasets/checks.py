"""Dataset health checks: found or not, item counts vs expected, missing, corrupt and truncated files.

:func:`scan_files` and :func:`count_warnings` are used by every adapter's ``build``;
:func:`check_dataset` runs all checks for one adapter and returns a
:class:`DatasetReport` (never raises for data problems), which the CLI prints.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from tqdm import tqdm

from crossgap.datasets.errors import DatasetError, FileProblem
from crossgap.datasets.images import (
    DEFAULT_TRUNCATED_IMAGES,
    decode_error,
    reclassify_truncated,
    split_truncated,
    truncated_loading,
    truncated_policy,
)

if TYPE_CHECKING:
    from crossgap.datasets.base import DatasetAdapter

log = logging.getLogger(__name__)


CHUNK = 256  # files per thread-pool task


def default_workers() -> int:
    """Threads used to decode images (PIL releases the GIL while decoding)."""
    return max(1, min(8, os.cpu_count() or 1))


def verify_image(path: Path) -> str | None:
    """``None`` if ``path`` decodes completely with PIL (no truncated loading), else the reason it does not."""
    with truncated_loading(False):
        return decode_error(path)


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


def count_warnings(dataset: str, counts: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """One message per split whose image count differs from ``expected`` (empty ``expected``: no check)."""
    if not expected:
        return []
    out = []
    for split in sorted(set(counts) | set(expected)):
        have, want = counts.get(split, 0), expected.get(split)
        if want is None:
            out.append(
                f"{dataset}: split {split!r} has {have} images but is not an expected split ({sorted(expected)})"
            )
        elif have != want:
            out.append(f"{dataset}: split {split!r} has {have} images, expected {want}")
    return out


@dataclass
class DatasetReport:
    """Outcome of :func:`check_dataset` for one dataset."""

    dataset: str
    found: bool = False
    folder: str | None = None
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    num_classes: int | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    #: ``truncated_images`` mode checked against, and the images that decode only with truncated
    #: loading (under ``fail`` they are also in ``problems``)
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES
    truncated: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Found, index files readable, and no missing or corrupt file (nor truncated one, under ``fail``)."""
        return self.found and self.error is None and not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report."""
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "found": self.found,
            "folder": self.folder,
            "error": self.error,
            "counts": self.counts,
            "expected": self.expected,
            "num_classes": self.num_classes,
            "warnings": self.warnings,
            "problems": [p.to_json() for p in self.problems],
            "truncated_images": self.truncated_images,
            "num_truncated": len(self.truncated),
            "truncated": [p.to_json() for p in self.truncated],
        }

    def format(self, *, brief_not_found: bool = False) -> str:
        """Human-readable multi-line report (``brief_not_found``: one line when not found)."""
        status = "OK" if self.ok else ("NOT FOUND" if not self.found else "PROBLEMS")
        lines = [f"[{status}] {self.dataset}" + (f"  ({self.folder})" if self.folder else "")]
        if self.error:
            error_lines = self.error.splitlines()
            if brief_not_found and not self.found:
                error_lines = error_lines[:1]
            lines += ["    " + line for line in error_lines]
        for split, n in self.counts.items():
            want = self.expected.get(split)
            mark = "" if want is None or want == n else "   <-- MISMATCH"
            lines.append(f"    {split:>8}: {n} images" + (f" (expected {want}){mark}" if want is not None else ""))
        for split in self.expected:
            if split not in self.counts and self.found and self.error is None:
                lines.append(f"    {split:>8}: 0 images (expected {self.expected[split]})   <-- MISMATCH")
        if self.num_classes is not None:
            lines.append(f"    classes: {self.num_classes}")
        if self.truncated:
            action = truncated_policy(self.truncated_images).action
            lines.append(f"    truncated: {len(self.truncated)} image(s), {action} "
                         f"(truncated_images: {self.truncated_images})")
        lines += [f"    WARNING {w}" for w in self.warnings]
        lines += [f"    {p.kind.upper()} {p.path}  ({p.reason})" for p in self.problems]
        if not truncated_policy(self.truncated_images).fail:
            lines += [f"    TRUNCATED {p.path}  (will be {truncated_policy(self.truncated_images).action})"
                      for p in self.truncated]
        return "\n".join(lines)


def check_dataset(
    adapter: "DatasetAdapter",
    dataroot: str | os.PathLike,
    *,
    check_images: bool = True,
    workers: int | None = None,
    truncated_images: str = DEFAULT_TRUNCATED_IMAGES,
) -> DatasetReport:
    """Run every check for ``adapter`` under ``dataroot``; data problems go into the report.

    Truncated images are counted in ``report.truncated``; they are problems only when
    ``truncated_images`` is ``fail``.
    """
    policy = truncated_policy(truncated_images)
    report = DatasetReport(dataset=adapter.slug, expected=dict(adapter.expected_sizes),
                           truncated_images=policy.name)
    try:
        report.folder = str(adapter.locate(dataroot))
        report.found = True
        inspection = adapter.inspect(dataroot, check_images=check_images, workers=workers)
    except DatasetError as exc:  # not found (found stays False), or a malformed index file
        report.error = str(exc)
        return report
    report.counts = inspection.counts
    report.num_classes = len(inspection.classnames)
    report.warnings = inspection.warnings
    report.truncated, others = split_truncated(inspection.problems)
    report.problems = inspection.problems if policy.fail else others
    return report
