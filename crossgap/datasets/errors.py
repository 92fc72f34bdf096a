"""Exceptions raised by the dataset layer.

All derive from :class:`DatasetError`, so a caller (e.g. the CLI) can catch one type
and show the message, which always names the file/folder involved and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass


class DatasetError(Exception):
    """Base class for every error raised by :mod:`crossgap.datasets`."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder (or a file its layout requires) is not where it must be."""


class DatasetLayoutError(DatasetError, ValueError):
    """A dataset's index file (split JSON, class list, ...) exists but is malformed."""


class ManifestError(DatasetError, ValueError):
    """A manifest (or a DataFrame/metadata about to become one) violates the schema."""


@dataclass(frozen=True)
class FileProblem:
    """One bad file found while checking a dataset.

    ``kind`` is ``"missing"`` or ``"corrupt"``; ``path`` is the absolute path;
    ``id`` is the manifest id of the row that needs it; ``reason`` is human readable.
    """

    id: str
    path: str
    kind: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """The JSON form stored under ``skipped`` in manifest metadata and the sidecar."""
        return {"id": self.id, "path": self.path, "kind": self.kind, "reason": self.reason}


class DatasetIntegrityError(DatasetError):
    """Files listed by the dataset are missing or unreadable; ``problems`` lists them all."""

    MAX_LISTED = 200

    def __init__(self, dataset: str, problems: list[FileProblem]) -> None:
        self.dataset = dataset
        self.problems = list(problems)
        lines = [f"{p.kind}: {p.path} ({p.reason})" for p in self.problems[: self.MAX_LISTED]]
        more = len(self.problems) - len(lines)
        if more > 0:
            lines.append(f"... and {more} more")
        truncated = sum(p.kind == "truncated" for p in self.problems)
        note = (
            f"\n{truncated} of them decode only with PIL's LOAD_TRUNCATED_IMAGES: build with "
            "truncated_images='load' (the reference implementation's behaviour) or 'skip' "
            "(params: prepare.truncated_images; CLI: --truncated-images)."
            if truncated else ""
        )
        super().__init__(
            f"{dataset}: {len(self.problems)} missing or unreadable file(s):\n  "
            + "\n  ".join(lines)
            + "\nFix or remove them, or build with skip_corrupt=True (CLI: --skip-corrupt) "
            "to skip them; skipped ids are recorded in the manifest metadata and its "
            "'.skipped.json' sidecar." + note
        )
