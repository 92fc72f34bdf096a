"""``crossgap datasets check``: every check of one dataset, gathered in a :class:`DatasetReport`.

:func:`check_dataset` locates and inspects a dataset with its adapter
(:meth:`~crossgap.datasets.base.DatasetAdapter.inspect`: item counts against the expected ones,
missing, corrupt and truncated files) and returns a :class:`DatasetReport` (it never raises
for data problems), which the CLI prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from crossgap.datasets.base import DatasetAdapter
from crossgap.datasets.errors import DatasetError, FileProblem
from crossgap.datasets.images import DEFAULT_TRUNCATED_IMAGES, split_truncated, truncated_policy


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
    adapter: DatasetAdapter,
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
