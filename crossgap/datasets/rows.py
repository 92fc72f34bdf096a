"""Manifest rows as adapters write them: images, captions of an image, plain texts; and their ids.

Ids follow :mod:`crossgap.datasets.manifest`: an image is ``"<split>/<key>"`` (the key is its
path unless stated), a caption ``"<image id>#<k>"`` with ``group`` = the image id, a text that
belongs to no image ``"<split>/<key>"`` without a group.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from crossgap.datasets.manifest import MANIFEST_COLUMNS

Row = dict[str, Any]


def image_row(split: str, path: str, label: int, classname: str | None, *, key: str | None = None) -> Row:
    """A manifest row for the image at ``path``; its id is ``"<split>/<key>"`` (``key`` defaults to ``path``)."""
    return {
        "id": f"{split}/{path if key is None else key}",
        "split": split,
        "modality": "image",
        "path": path,
        "text": None,
        "label": int(label),
        "classname": classname,
        "group": None,
    }


def _text_row(row_id: str, split: str, text: str, label: int, classname: str | None, group: str | None) -> Row:
    return {
        "id": row_id,
        "split": split,
        "modality": "text",
        "path": None,
        "text": text,
        "label": int(label),
        "classname": classname,
        "group": group,
    }


def text_rows(image: Row, captions: list[str]) -> list[Row]:
    """Manifest rows for the captions of ``image``: ids ``"<image id>#<k>"``, group = image id."""
    return [
        _text_row(f"{image['id']}#{k}", image["split"], text, image["label"], image["classname"], image["id"])
        for k, text in enumerate(captions)
    ]


def caption_rows(split: str, image_key: str, captions: list[str]) -> list[Row]:
    """Caption rows of an image that is *not* itself in the manifest.

    Ids are ``"<split>/<image_key>#<k>"`` and ``group`` is ``"<split>/<image_key>"`` (the
    id the image would have), so ``relevance: group`` means "captions of the same image".
    """
    group = f"{split}/{image_key}"
    return [_text_row(f"{group}#{k}", split, text, -1, None, group) for k, text in enumerate(captions)]


def plain_text_row(split: str, key: str, text: str, label: int = -1, classname: str | None = None) -> Row:
    """A text row that is not a caption of an image: id ``"<split>/<key>"``, no group."""
    return _text_row(f"{split}/{key}", split, text, label, classname, None)


def strip_split(row_id: str) -> str:
    """``"corpus/abc"`` -> ``"abc"``: the dataset's own key of a row."""
    return row_id.split("/", 1)[1] if "/" in row_id else row_id


def frame_from_rows(rows: list[Row]) -> pd.DataFrame:
    """Rows -> a DataFrame with exactly :data:`MANIFEST_COLUMNS` and an int64 label."""
    df = pd.DataFrame.from_records(rows, columns=list(MANIFEST_COLUMNS))
    df["label"] = df["label"].astype("int64")
    return df
