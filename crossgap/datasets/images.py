"""What to do with images that PIL decodes only with ``LOAD_TRUNCATED_IMAGES``: ``load | skip | fail``.

A *truncated* image, here, is a file PIL identifies but cannot decode completely (a JPEG cut
short by a broken download, or with corrupt entropy-coded data), that decodes once
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set (PIL then ignores the decoder error and leaves
the undecoded part grey).  The reference implementation sets that flag for every run
(miccunifi/Cross-the-Gap ``src/oti.py``, ``src/ovi.py``, ``src/datasets/roxford_rparis.py``:
``ImageFile.LOAD_TRUNCATED_IMAGES = True``), so such images stay in its query and gallery sets.

The mode is chosen once, when the manifest is prepared (``prepare.truncated_images``; CLI
``--truncated-images``), and :data:`TRUNCATED_POLICIES` says what each mode does:

* ``load``: truncated images stay in the manifest; feature extraction decodes them with the flag
  set (as the reference);
* ``skip``: they are dropped and listed in the manifest's ``skipped`` (kind ``"truncated"``);
* ``fail``: the build stops and lists them (the default).

Files PIL cannot decode even with the flag (and missing files) are *corrupt*: ``skip_corrupt``
alone decides about those, independently of this mode.  The manifest metadata records the mode,
the count and the ids under ``truncated_images`` (:func:`truncated_meta`), and feature
extraction reads the mode from there (:func:`manifest_truncated_mode`), so both phases agree.

``LOAD_TRUNCATED_IMAGES`` is a module-level PIL setting; :func:`truncated_loading` sets it under a
lock and restores it, so crossgap never leaves it changed.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from PIL import Image, ImageFile

from crossgap.datasets.errors import FileProblem

TRUNCATED = "truncated"  # FileProblem.kind of an image that decodes only with truncated loading


@dataclass(frozen=True)
class TruncatedPolicy:
    """One ``truncated_images`` mode: whether truncated images are kept (and loaded) or stop the build."""

    name: str
    keep: bool  # rows stay in the manifest; features decode them with LOAD_TRUNCATED_IMAGES
    fail: bool  # a truncated image stops the build (otherwise: kept or skipped)
    action: str  # what happened to them, as reported ("loaded", "skipped", "refused")


TRUNCATED_POLICIES: dict[str, TruncatedPolicy] = {
    "load": TruncatedPolicy("load", keep=True, fail=False, action="loaded"),
    "skip": TruncatedPolicy("skip", keep=False, fail=False, action="skipped"),
    "fail": TruncatedPolicy("fail", keep=False, fail=True, action="refused"),
}
DEFAULT_TRUNCATED_IMAGES = "fail"


def truncated_policy(mode: str) -> TruncatedPolicy:
    """The policy of ``mode``; ValueError naming the allowed modes otherwise."""
    try:
        return TRUNCATED_POLICIES[mode]
    except (KeyError, TypeError):
        raise ValueError(
            f"truncated_images: expected one of {sorted(TRUNCATED_POLICIES)}, got {mode!r}"
        ) from None


_FLAG_LOCK = threading.RLock()


@contextmanager
def truncated_loading(enabled: bool) -> Iterator[None]:
    """Run the block with ``ImageFile.LOAD_TRUNCATED_IMAGES = enabled``, restoring it afterwards.

    Threads started inside the block see the setting (PIL reads the module attribute when it
    decodes); other callers of this function wait for the block to end.
    """
    with _FLAG_LOCK:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = bool(enabled)
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def decode_error(path: Path) -> str | None:
    """``None`` if ``path`` decodes completely under the current PIL setting, else the reason."""
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"{type(exc).__name__}: {exc}"
    return None


def reclassify_truncated(problems: Sequence[FileProblem]) -> list[FileProblem]:
    """``problems`` with each ``corrupt`` image that decodes with truncated loading marked ``truncated``.

    Runs serially with the flag set (:func:`truncated_loading`), after the strict pass.
    """
    out = []
    with truncated_loading(True):
        for p in problems:
            if p.kind == "corrupt" and decode_error(Path(p.path)) is None:
                p = FileProblem(p.id, p.path, TRUNCATED, f"decodes only with LOAD_TRUNCATED_IMAGES ({p.reason})")
            out.append(p)
    return out


def split_truncated(problems: Sequence[FileProblem]) -> tuple[list[FileProblem], list[FileProblem]]:
    """``(truncated, other)`` problems, each in input order."""
    truncated = [p for p in problems if p.kind == TRUNCATED]
    return truncated, [p for p in problems if p.kind != TRUNCATED]


def truncated_meta(policy: TruncatedPolicy, truncated: Sequence[FileProblem], checked: bool) -> dict[str, Any]:
    """The manifest's ``truncated_images`` metadata: ``{"mode", "count", "ids", "action", "checked"}``.

    ``checked`` is False when images were not decoded while preparing (``check_images: false``):
    then nothing was counted, and feature extraction applies the mode as it meets such images.
    """
    return {
        "mode": policy.name,
        "count": len(truncated),
        "ids": [p.id for p in truncated],
        "action": policy.action if truncated else "none",
        "checked": bool(checked),
    }


def manifest_truncated_mode(meta: Mapping[str, Any]) -> str:
    """The ``truncated_images`` mode a manifest was prepared with (``fail`` for older manifests)."""
    value = meta.get("truncated_images")
    mode = value.get("mode") if isinstance(value, Mapping) else DEFAULT_TRUNCATED_IMAGES
    truncated_policy(mode)  # a malformed value is an error, not a silent default
    return str(mode)


def open_rgb(path: str | Path, *, load_truncated: bool) -> Image.Image:
    """The image at ``path`` decoded and converted to RGB (``load_truncated``: with truncated loading).

    Raises ``OSError`` naming the file; for an image that needs truncated loading without it, the
    message says how the manifest decides that.
    """
    with truncated_loading(load_truncated):
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except OSError as exc:
            hint = ""
            if not load_truncated and "truncated" in str(exc):
                hint = (" (the manifest was prepared with truncated_images other than 'load'; re-prepare it "
                        "with prepare.truncated_images: load to decode such images, or with check_images on "
                        "to find them)")
            raise OSError(f"cannot read image {path}: {exc}{hint}") from exc
