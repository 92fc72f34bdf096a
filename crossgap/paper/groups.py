"""The paper's layout: which datasets each task's table lists, in which groups, which averages, which metric.

Rows of a paper-style table follow the paper (Cross the Gap, ICLR 2025, and its poster):

- image retrieval: CUB, SOP, ROxford, RParis, then the 11 CoOp sets; the poster's average is over all 15;
- text retrieval: COCO, Flickr30k, nocaps (the poster's average over these 3), then the long-text sets;
- zero-shot: the 11 CoOp sets (the poster's average), then the ImageNet variants.

Datasets of a run that the paper does not have (the embedded ``synthetic``, your own data) form a last
group, "other datasets", with its own average, so every dataset of a run has its row.

Per dataset the table reads one metric (:func:`paper_metric`): the task's headline
(:data:`crossgap.comparison.HEADLINES`) except CUB/SOP, whose mAP@R is read in the reference's
definition (top R+1, ``mAP_at_R_reference``; both definitions are recorded in every leave-one-out
result), and ROxford/RParis, read in the Medium protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from crossgap.comparison import HEADLINES

COOP11: tuple[str, ...] = ("stanford_cars", "oxford_pets", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat",
                           "food101", "sun397", "caltech101", "ucf101", "imagenet")
NANOBEIR: tuple[str, ...] = ("nano_climatefever", "nano_dbpedia", "nano_fever", "nano_nfcorpus", "nano_nq",
                             "nano_scidocs", "nano_scifact")
OTHER = "other"


@dataclass(frozen=True)
class Group:
    """Rows of a table shown together (and one facet of the task's plots): ``key``, a title, dataset keys."""

    key: str
    title: str
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class Average:
    """An average row: the mean over ``datasets`` of each dataset's paper metric (``key`` names it in
    ``paper_summary.json`` and in the published numbers)."""

    key: str
    title: str
    datasets: tuple[str, ...]


#: per task: the row groups, in the paper's order
GROUPS: dict[str, tuple[Group, ...]] = {
    "image_retrieval": (
        Group("retrieval4", "CUB, SOP, ROxford, RParis", ("cub2011", "sop", "roxford5k", "rparis6k")),
        Group("coop11", "the 11 CoOp datasets", COOP11),
    ),
    "text_retrieval": (
        Group("captions3", "caption sets", ("coco_text", "flickr30k_text", "nocaps_text")),
        Group("longtext10", "long-text sets", ("imdb_text", "newsgroup_text", *NANOBEIR)),
    ),
    "zero_shot": (
        Group("coop11", "the 11 CoOp datasets", COOP11),
        Group("imagenet_variants", "ImageNet variants", ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r")),
    ),
}

#: per task: the average rows (the poster's first), then one over the run's datasets outside the paper
AVERAGES: dict[str, tuple[Average, ...]] = {
    "image_retrieval": (Average("paper15", "mean over the paper's 15 datasets",
                                ("cub2011", "sop", "roxford5k", "rparis6k", *COOP11)),),
    "text_retrieval": (Average("captions3", "mean over COCO, Flickr30k, nocaps",
                               ("coco_text", "flickr30k_text", "nocaps_text")),
                       Average("longtext10", "mean over the long-text sets", ("imdb_text", "newsgroup_text", *NANOBEIR))),
    "zero_shot": (Average("coop11", "mean over the 11 CoOp datasets", COOP11),
                  Average("imagenet_variants", "mean over the ImageNet variants",
                          ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"))),
}

#: datasets whose paper metric is not the task's headline: (metric, then fallbacks)
DATASET_METRICS: dict[str, tuple[str, ...]] = {
    "cub2011": ("mAP_at_R_reference", "mAP_at_R", "mAP"),
    "sop": ("mAP_at_R_reference", "mAP_at_R", "mAP"),
    "roxford5k": ("mAP_medium",),
    "rparis6k": ("mAP_medium",),
}

#: the methods a paper table shows by default (``report.methods``): the inversions and the training-free methods
DEFAULT_KINDS: tuple[str, ...] = ("inverted", "transform")


def paper_datasets(task: str) -> tuple[str, ...]:
    """Every dataset the paper lists for ``task``, in its order."""
    return tuple(d for g in GROUPS.get(task, ()) for d in g.datasets)


def groups_for(task: str, datasets: Iterable[str]) -> list[Group]:
    """The paper's groups of ``task`` plus, when the run has datasets outside them, the "other" group
    (sorted keys).  ``datasets``: the datasets the run evaluated on ``task``."""
    known = set(paper_datasets(task))
    other = tuple(sorted(set(datasets) - known))
    groups = list(GROUPS.get(task, ()))
    return groups + [Group(OTHER, "other datasets (not in the paper)", other)] if other else groups


def averages_for(task: str, datasets: Iterable[str]) -> list[Average]:
    """The paper's averages of ``task`` plus one over the run's datasets outside the paper (if any)."""
    known = set(paper_datasets(task))
    other = tuple(sorted(set(datasets) - known))
    averages = list(AVERAGES.get(task, ()))
    return averages + [Average(OTHER, "mean over the other datasets", other)] if other else averages


def paper_metric(task: str, dataset: str, available: Sequence[str] | Mapping[str, object]) -> str:
    """The metric a paper table reads for ``dataset`` on ``task``: the first of the dataset's list
    (:data:`DATASET_METRICS`) or the task's headlines that the native result has, else the first."""
    candidates = DATASET_METRICS.get(dataset, ()) + HEADLINES[task]
    return next((m for m in candidates if m in available), candidates[0])
