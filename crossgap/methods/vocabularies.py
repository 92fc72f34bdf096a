"""Fixed lists of bare class names that a method's span is fitted on, whatever dataset is evaluated.

``imagenet``: ImageNet-1k's 1000 class names as Herzog & Wang's ``SpanProjection`` reads them
(``Vision-Kek/Is-CLIP-Really-Misaligned``, ``cvpr26-suppl/span_projection.py``,
``fwd_imagenet_texts``: ``https://raw.githubusercontent.com/pytorch/hub/master/imagenet_classes.txt``,
split on newlines).  ``data/imagenet_classes.txt`` is that file as it stands in ``pytorch/hub``
(1000 names; it equals torchvision's ``_IMAGENET_CATEGORIES`` except that torchvision disambiguates
the two duplicates ``crane`` → ``crane bird`` and ``maillot`` → ``maillot tank suit``).

The DAG encodes each list once per model (``data/features/_vocabulary/<model>/<name>_classnames.safetensors``,
rule ``vocabulary_features``).  No torch import here.
"""

from __future__ import annotations

from pathlib import Path

_DATA = Path(__file__).parent / "data"
#: vocabulary name -> file of names (one per line) in this package
VOCABULARIES: dict[str, str] = {"imagenet": "imagenet_classes.txt"}


def vocabulary_names(name: str) -> list[str]:
    """The class names of vocabulary ``name``, in file order (``ValueError`` naming the known ones)."""
    if name not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {name!r}; known: {sorted(VOCABULARIES)}")
    path = _DATA / VOCABULARIES[name]
    names = path.read_text(encoding="utf-8").strip().split("\n")
    if not names or any(not n.strip() for n in names):
        raise ValueError(f"{path}: expected one class name per line")
    return names
