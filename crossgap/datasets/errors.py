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
    ``unread``: the problem stops a shard, so the samples from ``path`` to the end of the shard
    were never read (their ids are unknown); ``lost`` is how many that is (``None``: unknown)
    and ``expected`` how many the shard (or split) should hold, from the dataset's metadata.
    """

    id: str
    path: str
    kind: str
    reason: str
    unread: bool = False
    lost: int | None = None
    expected: int | None = None

    def to_json(self) -> dict[str, object]:
        """The JSON form stored under ``skipped`` in manifest metadata and the sidecar."""
        out: dict[str, object] = {"id": self.id, "path": self.path, "kind": self.kind, "reason": self.reason}
        if self.unread:
            out.update(unread=True, lost=self.lost, expected=self.expected)
        return out


def skipped_summary(skipped: list[dict]) -> str:
    """What ``skipped`` (the JSON entries of a manifest's metadata) cost, in words.

    Files skipped count one image each; an ``unread`` entry (a truncated shard) counts its
    ``lost`` samples, or "at least 1" when the count is unknown; orphans are caption rows.
    """
    unread = [s for s in skipped if s.get("unread")]
    files = sum(1 for s in skipped if not s.get("unread") and s.get("kind") != "orphan")
    orphans = sum(1 for s in skipped if s.get("kind") == "orphan")
    known = sum(int(s["lost"]) for s in unread if s.get("lost") is not None)
    unknown = sum(1 for s in unread if s.get("lost") is None)
    images = f"{files + known}" if not unknown else f"at least {files + known + unknown}"
    parts = [f"{files} missing/corrupt/truncated file(s)"]
    if unread:
        never = f"{known}" if not unknown else f"at least {known + unknown}"
        parts.append(f"{never} sample(s) never read from {len(unread)} truncated shard(s)")
    return f"skipped {images} image(s) ({', '.join(parts)}) and {orphans} caption row(s) of skipped images"


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
