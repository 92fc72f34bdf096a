"""How the reference implementation names the texts of the caption datasets, read from their source files.

``crossgap import-reference`` matches the reference's ``names.pkl`` to manifest rows. For the
caption datasets the reference's ``text_name`` is an annotation id that crossgap's row ids (``<split>/<image>#<k>``,
``k`` = the caption's position among its image's captions) do not carry, so it is read back from the
annotation file the manifest was built from (``meta["root"]``). Followed, not copied, from
``miccunifi/Cross-the-Gap`` ``src/datasets/``:

* ``coco_text`` (``coco_text.py``): ``str(sentence["sentid"])`` of ``COCO2014/dataset_coco_light.json``;
* ``flickr30k_text`` (``flickr30k_text.py``): ``f"{image_name.strip()}_{comment_number}"`` of
  ``Flickr30K/results.csv`` read with pandas: the number is an integer (``"1000092795.jpg_0"``) when the
  whole column parses as numbers; with one line lacking its delimiter (the Kaggle copy) the column stays
  text and the name keeps the file's spacing (``"1000092795.jpg_ 0"``), and that line's caption cannot be
  named at all (pandas reads it as a row without a caption, on which the reference fails);
* ``nocaps_text`` (``nocaps_text.py``): ``str(annotation["id"])`` of ``nocaps/nocaps_val_4500_captions.json``;
* ``imdb_text`` (``imdb_text.py``): a query is named by its sentence, the manifest's ``text``
  (:data:`crossgap.interop.NAMING_SCHEMES` ``"text"``: no file is read).

Each reader returns ``{"<image>#<k>": reference name}`` (the row id without its split), or raises
:class:`ReferenceNamesError` naming the file and what it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from crossgap.datasets.captions import read_flickr_results


class ReferenceNamesError(ValueError):
    """The reference's names cannot be read back: the message names the file and why."""


#: the reference's name of each caption, keyed by crossgap's row id without its split (``<image>#<k>``)
Reader = Callable[[Path], dict[str, "str | None"]]
REFERENCE_NAME_READERS: dict[str, tuple[str, str, str, Reader]] = {}


def register(slug: str, source: str, rule: str, unnamed: str) -> Callable[[Reader], Reader]:
    """Register the reader of dataset ``slug``'s names: ``source`` is its file (under the root), ``rule`` the
    reference's naming in words, ``unnamed`` what a caption the reader cannot name is."""

    def wrap(fn: Reader) -> Reader:
        REFERENCE_NAME_READERS[slug] = (source, rule, unnamed, fn)
        return fn

    return wrap


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise ReferenceNamesError(f"{path}: missing (the manifest was built from it; the reference's names are "
                                  "read back from it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceNamesError(f"{path}: not readable JSON ({exc})") from None


@register("coco_text", "dataset_coco_light.json", "str(sentid) of each sentence", "a sentence without 'sentid'")
def coco_names(root: Path) -> dict[str, str | None]:
    """``{"<filename>#<k>": str(images[i].sentences[k].sentid)}``."""
    path = root / "dataset_coco_light.json"
    data = _load_json(path)
    out: dict[str, str | None] = {}
    for image in (data.get("images") or []) if isinstance(data, dict) else []:
        for k, sentence in enumerate(image.get("sentences") or []):
            sentid = sentence.get("sentid") if isinstance(sentence, dict) else None
            out[f"{image.get('filename')}#{k}"] = None if sentid is None else str(sentid)
    return out


@register("flickr30k_text", "results.csv", "f'{image_name}_{comment_number}' as pandas reads results.csv",
          "a line without its second delimiter: pandas reads it as a row without a caption, on which the "
          "reference fails")
def flickr_names(root: Path) -> dict[str, str | None]:
    """``{"<image>#<k>": f"{image}_{comment_number}"}``; ``None`` for a line without its second delimiter."""
    path = root / "results.csv"
    if not path.is_file():
        raise ReferenceNamesError(f"{path}: missing (the manifest was built from it; the reference's names are "
                                  "read back from it)")
    read_flickr_results(path)  # the layout checks of the adapter (names the bad line)
    tokens: list[tuple[str, str | None]] = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            parts = line.split("|", 2)
            tokens.append((parts[0].strip(), parts[1] if len(parts) == 3 else None))
    numeric = all(t is not None and t.strip().isdigit() for _, t in tokens)  # pandas: an int64 column
    out: dict[str, str | None] = {}
    count: dict[str, int] = {}
    for image, token in tokens:
        k = count[image] = count.get(image, -1) + 1
        name = None if token is None else f"{image}_{int(token) if numeric else token}"
        out[f"{image}#{k}"] = name
    return out


@register("nocaps_text", "nocaps_val_4500_captions.json", "str(id) of each annotation",
          "an annotation without 'id'")
def nocaps_names(root: Path) -> dict[str, str | None]:
    """``{"<file_name>#<k>": str(annotations[j].id)}``, ``k`` counting each image's annotations in file order."""
    path = root / "nocaps_val_4500_captions.json"
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ReferenceNamesError(f"{path}: expected a JSON object with 'images' and 'annotations'")
    files = {image.get("id"): image.get("file_name") for image in data.get("images") or []}
    out: dict[str, str | None] = {}
    count: dict[object, int] = {}
    for ann in data.get("annotations") or []:
        k = count[ann.get("image_id")] = count.get(ann.get("image_id"), -1) + 1
        out[f"{files.get(ann.get('image_id'))}#{k}"] = None if ann.get("id") is None else str(ann["id"])
    return out


def reference_names(dataset: str, root: Path, keys: list[str]) -> list[str | None] | None:
    """The reference's name of each target (``keys``: row ids without their split), or ``None`` if
    ``dataset`` has no reader. Targets the file cannot name raise :class:`ReferenceNamesError` saying which."""
    if dataset not in REFERENCE_NAME_READERS:
        return None
    source, rule, unnamed, reader = REFERENCE_NAME_READERS[dataset]
    names = reader(root)
    found = [names.get(key) for key in keys]
    missing = [key for key, name in zip(keys, found) if name is None]
    if missing:
        raise ReferenceNamesError(
            f"{root / source}: the reference names {dataset} captions by {rule}; {len(missing)} target(s) have "
            f"no such name (e.g. {missing[:3]}: {unnamed}); give --names-map for them"
        )
    return found
