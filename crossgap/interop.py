"""Import inversions computed with the reference implementation (miccunifi/Cross-the-Gap).

The reference saves each OTI/OVI run (``src/utils.py``, ``save_tokens``; folder from ``src/oti.py`` /
``src/ovi.py``) as::

    <project>/data/{oti,ovi}_pseudo_tokens/<dataset_name lower>/<split>/<exp_name>/
        oti_pseudo_tokens.pt | ovi_pseudo_tokens.pt   torch.save of a tensor [N, P, W]
        names.pkl             pickled list of N names (row i of the tokens), in inversion order
        losses.pkl            pickled list, per optimised batch, of the per-step mean losses
        hyperparameters.json  the run's arguments (clip_model_name, template_sentence, oti_steps /
                              ovi_steps, learning_rate, weight_decay, num_pseudo_tokens, seed,
                              batch_size, dataset_name, split, exp_name, use_class_names, ...)

:func:`import_reference` turns such a folder into a crossgap inversion file (a
:class:`~crossgap.storage.FeatureSet` with the metadata of :func:`crossgap.steps.inversion.gather_step`):
rows in crossgap's target order, ``pseudo_tokens`` ``[N, P, W]``, ``losses`` ``[N, steps]`` (each
sample gets its batch's mean: the reference records no per-sample loss) and features re-encoded
through the model with :func:`crossgap.inversion.oti_features` / :func:`~crossgap.inversion.ovi_features`.
``names.pkl`` and ``losses.pkl`` are read with :func:`crossgap.safe_pickle.restricted_load`, the
tokens with ``torch.load(weights_only=True)``: a tampered file cannot run code.

Names are matched to manifest rows by a naming scheme (:data:`NAMING_SCHEMES`, ``auto`` tries each):
the reference names an image ``<parent folder>__<file name>`` in its DASSL datasets (CoOp sets,
FGVC-Aircraft, ImageNet), by the file name's stem in CUB, SOP and ROxford/RParis, a caption of COCO,
Flickr30k or nocaps by its annotation id (``reference``: read back from the dataset's annotation file,
:mod:`crossgap.interop_names`), an IMDB query by its sentence (``text``), other texts by their dataset
key, and a class prompt by its class name; or give an explicit ``{name: crossgap id}``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

import pandas as pd
import torch

from crossgap.datasets.manifest import query_gallery, read_manifest, select
from crossgap.datasets.rows import strip_split
from crossgap.interop_names import ReferenceNamesError, reference_names
from crossgap.safe_pickle import restricted_load
from crossgap.storage import FeatureSet, save_feature_set

log = logging.getLogger(__name__)

TOKEN_FILES: dict[str, str] = {"oti": "oti_pseudo_tokens.pt", "ovi": "ovi_pseudo_tokens.pt"}
STEPS_KEY: dict[str, str] = {"oti": "oti_steps", "ovi": "ovi_steps"}
TAG_PATTERN = re.compile(r"[0-9a-f]{10}")  # the inversion tag wildcard of workflow/rules/common.smk


class ReferenceImportError(ValueError):
    """A reference run folder that cannot be imported; the message names the file and what was expected."""


@dataclass
class ReferenceRun:
    """One reference run: ``tokens [N, P, W]`` named by ``names`` (N), its hyperparameters and batch losses."""

    folder: Path
    method: str
    tokens: torch.Tensor
    names: list[str]
    hyperparameters: dict[str, Any]
    batch_losses: list[list[float]] | None


def reference_run_dir(project: str | Path, method: str, dataset_name: str, split: str, exp_name: str) -> Path:
    """Where the reference writes a run: ``<project>/data/<method>_pseudo_tokens/<dataset>/<split>/<exp>``."""
    return Path(project) / "data" / f"{method}_pseudo_tokens" / dataset_name.lower() / split / exp_name


def _method_of(folder: Path) -> str:
    found = [m for m, name in TOKEN_FILES.items() if (folder / name).is_file()]
    if len(found) != 1:
        raise ReferenceImportError(
            f"{folder}: expected exactly one of {sorted(TOKEN_FILES.values())} (a reference OTI/OVI run folder, "
            f"see crossgap.interop), found {[TOKEN_FILES[m] for m in found] or 'none'}"
        )
    return found[0]


def read_reference_run(folder: str | Path) -> ReferenceRun:
    """Read and check a reference run folder (layout in the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReferenceImportError(f"{folder}: not a folder (expected a reference run folder)")
    method = _method_of(folder)
    token_path, names_path = folder / TOKEN_FILES[method], folder / "names.pkl"
    hyper_path = folder / "hyperparameters.json"
    for path in (names_path, hyper_path):
        if not path.is_file():
            raise ReferenceImportError(f"{path}: missing (the reference's save_tokens writes it next to "
                                       f"{token_path.name})")
    try:
        tokens = torch.load(token_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure: refuse the file
        raise ReferenceImportError(f"{token_path}: not a tensor file readable with torch.load(weights_only=True) "
                                   f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(tokens, torch.Tensor) or tokens.dim() not in (2, 3) or not tokens.is_floating_point():
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ReferenceImportError(f"{token_path}: expected a float tensor [N, P, W], got {got}")
    tokens = tokens.float().unsqueeze(1) if tokens.dim() == 2 else tokens.float()
    names = restricted_load(names_path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ReferenceImportError(f"{names_path}: expected a pickled list of strings")
    if len(names) != tokens.shape[0]:
        raise ReferenceImportError(f"{names_path}: {len(names)} names but {token_path.name} has {tokens.shape[0]} rows")
    try:
        hyper = json.loads(hyper_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceImportError(f"{hyper_path}: not readable JSON ({exc})") from exc
    if not isinstance(hyper, dict):
        raise ReferenceImportError(f"{hyper_path}: expected a JSON object of the run's arguments")
    losses_path = folder / "losses.pkl"
    batch_losses = restricted_load(losses_path) if losses_path.is_file() else None
    return ReferenceRun(folder, method, tokens, names, hyper, batch_losses)


# --------------------------------------------------------------------------------------------
# targets and naming
# --------------------------------------------------------------------------------------------
@dataclass
class Targets:
    """What crossgap inverts for one set, in its order: ids, image paths (absolute) or class names, texts.

    ``reference``: the reference's own name of each target where crossgap reads it back from the
    dataset's source file (:mod:`crossgap.interop_names`); ``reference_problem``: why it could not.
    """

    ids: list[str]
    paths: list[Path | None]
    classnames: list[str | None]
    texts: list[str | None] | None = None
    reference: list[str | None] | None = None
    reference_problem: str | None = None


def _rows_targets(rows: pd.DataFrame, root: Path) -> Targets:
    paths = [root / p if isinstance(p, str) else None for p in rows["path"]]
    texts = [t if isinstance(t, str) else None for t in rows["text"]] if "text" in rows else None
    return Targets(rows["id"].tolist(), paths, [None] * len(rows), texts)


def _oti_split(df: pd.DataFrame, meta: Mapping[str, Any], inverted: str) -> Targets:
    # the rows crossgap's OTI jobs invert: every image of the split (crossgap.plan split tokens)
    split = "*" if inverted == "all" else inverted
    return _rows_targets(select(df, "image", {"split": split}), Path(meta["root"]))


def _ovi_queries(df: pd.DataFrame, meta: Mapping[str, Any], inverted: str) -> Targets:
    return _rows_targets(query_gallery(df, meta, "text_retrieval")[0], Path(meta["root"]))


def _ovi_classnames(df: pd.DataFrame, meta: Mapping[str, Any], inverted: str) -> Targets:
    # one class sentence per class, ids as crossgap.steps.features.class_sentences_step names them
    names = list(meta["classnames"])
    return Targets([f"class{c}" for c in range(len(names))], [None] * len(names), names)


def _ovi_prompts(df: pd.DataFrame, meta: Mapping[str, Any], inverted: str) -> Targets:
    # one prompt per class, class-major ids as crossgap.steps.features.prompts_step names them (one template)
    names = list(meta["classnames"])
    return Targets([f"class{c}/template0" for c in range(len(names))], [None] * len(names), names)


#: ``(method, set) -> targets``; an OTI set is a split token (``test``, ``query``, ``all``, ...).
TARGET_SETS: dict[str, Callable[[pd.DataFrame, Mapping[str, Any], str], Targets]] = {
    "oti": _oti_split,
    "ovi:queries": _ovi_queries,
    "ovi:classnames": _ovi_classnames,  # the pipeline's OVI zero-shot set (use_class_names runs)
    "ovi:prompts": _ovi_prompts,  # the earlier name of that set (CoOp prompt ids, one template)
}


def targets_for(method: str, inverted: str, df: pd.DataFrame, meta: Mapping[str, Any]) -> Targets:
    """The targets crossgap inverts for ``method`` and set ``inverted`` of a manifest."""
    key = method if method == "oti" else f"{method}:{inverted}"
    if key not in TARGET_SETS:
        raise ReferenceImportError(f"unknown inverted set {inverted!r} for {method}; expected a split for oti, "
                                   "'queries', 'classnames' or 'prompts' for ovi")
    targets = TARGET_SETS[key](df, meta, inverted)
    try:  # the caption datasets: the reference's annotation ids, read back from the source file
        targets.reference = reference_names(str(meta.get("dataset")), Path(meta.get("root") or "."),
                                            [strip_split(i) for i in targets.ids])
    except ReferenceNamesError as exc:
        targets.reference_problem = str(exc)
    return targets


def _parent_name(targets: Targets, i: int) -> str | None:
    p = targets.paths[i]
    return f"{p.parent.name}__{p.name}" if p is not None else None


#: How the reference names a target (``None``: the scheme does not apply to it).
NAMING_SCHEMES: dict[str, Callable[[Targets, int], str | None]] = {
    # COCO sentid, Flickr30k <image>_<comment_number>, nocaps caption id (crossgap.interop_names)
    "reference": lambda t, i: t.reference[i] if t.reference is not None else None,
    "id": lambda t, i: t.ids[i],
    "parent__name": _parent_name,  # DASSL datasets: f"{Path(impath).parent.name}__{Path(impath).name}"
    "stem": lambda t, i: PurePosixPath(t.paths[i]).name.split(".")[0] if t.paths[i] else None,  # CUB, SOP, R*
    "key": lambda t, i: strip_split(t.ids[i]),  # texts: the dataset's own key
    "classname": lambda t, i: t.classnames[i].replace("_", " ") if t.classnames[i] is not None else None,
    "text": lambda t, i: t.texts[i] if t.texts is not None else None,  # IMDB queries: named by their sentence
}


def _keys(targets: Targets, scheme: str) -> dict[str, int] | None:
    keys = [NAMING_SCHEMES[scheme](targets, i) for i in range(len(targets.ids))]
    if any(k is None for k in keys) or len(set(keys)) != len(keys):
        return None
    return {k: i for i, k in enumerate(keys)}


def match_names(
    names: Sequence[str], targets: Targets, naming: str = "auto", names_map: Mapping[str, str] | None = None
) -> tuple[list[int], str]:
    """``(order, scheme)``: ``order[i]`` is the reference row of target ``i``.

    Every target must be named; names that match no target are dropped with a warning, a repeated
    name keeps its first row (as the reference does when it de-duplicates).
    """
    if names_map is not None:
        index = {key: i for i, key in enumerate(targets.ids)}
        candidates = {"map": {ref: index[cid] for ref, cid in names_map.items() if cid in index}}
    else:
        schemes = list(NAMING_SCHEMES) if naming == "auto" else [naming]
        unknown = [s for s in schemes if s not in NAMING_SCHEMES]
        if unknown:
            raise ReferenceImportError(
                f"unknown naming {unknown[0]!r}; expected 'auto' or one of {sorted(NAMING_SCHEMES)}")
        candidates = {s: k for s in schemes if (k := _keys(targets, s)) is not None}
    coverage = {}
    for scheme, keys in candidates.items():
        order: dict[int, int] = {}
        unmatched = 0
        for row, name in enumerate(names):
            target = keys.get(name.replace("_", " ") if scheme == "classname" else name)
            if target is None:
                unmatched += 1
            else:
                order.setdefault(target, row)
        coverage[scheme] = len(order)
        if len(order) == len(targets.ids):
            if unmatched:
                log.warning("%d reference name(s) match no crossgap target under naming %r (e.g. rows skipped in "
                            "the manifest): dropped", unmatched, scheme)
            return [order[i] for i in range(len(targets.ids))], scheme
    raise ReferenceImportError(
        f"the reference names do not cover the {len(targets.ids)} crossgap targets under any naming "
        f"(targets named per scheme: {coverage}; first reference names: {list(names[:3])}, first target ids: "
        f"{targets.ids[:3]}); pass names_map (CLI --names-map JSON of reference name -> crossgap id)"
        + (f". {targets.reference_problem}" if targets.reference_problem else "")
    )


# --------------------------------------------------------------------------------------------
# the crossgap file
# --------------------------------------------------------------------------------------------
def crossgap_params(run: ReferenceRun) -> dict[str, Any]:
    """The inversion's result fields, named as crossgap's ``params`` (OTI adds ``template``)."""
    hyper = run.hyperparameters
    missing = [k for k in (STEPS_KEY[run.method], "learning_rate", "weight_decay", "num_pseudo_tokens", "seed")
               if k not in hyper]
    if missing:
        raise ReferenceImportError(f"{run.folder / 'hyperparameters.json'}: missing {missing}")
    params = {"steps": int(hyper[STEPS_KEY[run.method]]), "learning_rate": float(hyper["learning_rate"]),
              "weight_decay": float(hyper["weight_decay"]), "num_pseudo_tokens": int(hyper["num_pseudo_tokens"]),
              "seed": int(hyper["seed"])}
    if run.method == "oti":
        params["template"] = str(hyper.get("template_sentence") or "a photo of {}")
    if params["num_pseudo_tokens"] != run.tokens.shape[1]:
        raise ReferenceImportError(f"{run.folder}: hyperparameters say num_pseudo_tokens "
                                   f"{params['num_pseudo_tokens']}, the tokens have {run.tokens.shape[1]}")
    return params


def sample_losses(run: ReferenceRun, steps: int) -> torch.Tensor | None:
    """``[N, steps]``: each row the mean loss of its reference batch (``batch_size`` rows in order).

    ``None`` (with a warning) when ``losses.pkl`` is absent or does not fit ``N`` rows in batches of
    the recorded ``batch_size`` (e.g. a run resumed with another batch size).
    """
    n, batch = run.tokens.shape[0], int(run.hyperparameters.get("batch_size") or 0)
    losses = run.batch_losses
    fits = (isinstance(losses, list) and batch > 0 and len(losses) == -(-n // batch)
            and all(isinstance(b, list) and len(b) == steps for b in losses))
    if not fits:
        log.warning("%s: losses.pkl absent or not %d batches of %d steps; the imported file has no losses",
                    run.folder, -(-n // batch) if batch else 0, steps)
        return None
    per_batch = torch.tensor(losses, dtype=torch.float32)  # [batches, steps]
    return per_batch.repeat_interleave(batch, dim=0)[:n]


def inversion_path(data_dir: str | Path, dataset: str, model: str, method: str, tag: str, inverted: str) -> Path:
    """``<data>/inversion/<dataset>/<model>/<method>-<tag>/<set>.safetensors`` (the gather rules' output)."""
    if not TAG_PATTERN.fullmatch(tag):
        raise ReferenceImportError(f"tag {tag!r}: expected 10 lowercase hex digits (the inversion tag of the "
                                   "parameters the pipeline should find this file under)")
    return Path(data_dir) / "inversion" / dataset / model / f"{method}-{tag}" / f"{inverted}.safetensors"


def default_set(run: ReferenceRun, meta: Mapping[str, Any]) -> str:
    """OTI: the image-retrieval query split (else the zero-shot split); OVI: classnames or queries."""
    if run.method == "ovi":
        return "classnames" if run.hyperparameters.get("use_class_names") else "queries"
    for task, role in (("image_retrieval", "query"), ("zero_shot", None)):
        spec = (meta.get("protocol") or {}).get(task)
        if spec:
            split = (spec[role] if role else spec)["split"]
            return "all" if split == "*" else split
    raise ReferenceImportError(f"{meta.get('dataset')}: no image task in the protocol; give the inverted set")


def import_reference(
    run_dir: str | Path,
    *,
    manifest: str | Path,
    dataset: str,
    model_slug: str,
    model_spec: Mapping[str, Any],
    inverted: str | None = None,
    tag: str | None = None,
    out: str | Path | None = None,
    data_dir: str | Path = "data",
    naming: str = "auto",
    names_map: Mapping[str, str] | None = None,
    model: Any = None,
) -> tuple[Path, FeatureSet]:
    """Write the reference run at ``run_dir`` as a crossgap inversion file; return ``(path, feature set)``.

    Args:
        manifest: the crossgap manifest of the dataset the run inverted.
        dataset, model_slug: the params slugs (output path and metadata).
        model_spec: the ``models:`` entry that loads the run's model (features are re-encoded with it).
        inverted: the set: a split token for OTI, ``queries`` / ``classnames`` for OVI (default: :func:`default_set`).
        tag: the inversion tag to file it under (:func:`inversion_path`); or ``out``, an explicit path.
        naming, names_map: how reference names map to manifest rows (:func:`match_names`).
        model: an already loaded :class:`~crossgap.models.base.CLIPWrapper` (else loaded from ``model_spec``).
    """
    from crossgap.inversion import oti_features, ovi_features
    from crossgap.runtime.env import load_model, runtime_meta

    run = read_reference_run(run_dir)
    params = crossgap_params(run)
    df, meta = read_manifest(manifest)
    inverted = inverted or default_set(run, meta)
    if out is None and tag is None:
        raise ReferenceImportError("give the tag to file the import under (tag=...) or an explicit out path")
    path = Path(out) if out is not None else inversion_path(data_dir, dataset, model_slug, run.method, tag, inverted)
    targets = targets_for(run.method, inverted, df, meta)
    order, scheme = match_names(run.names, targets, naming, names_map)
    tokens = run.tokens[torch.as_tensor(order, dtype=torch.long)]  # [N, P, W] in crossgap's order
    model = model if model is not None else load_model(model_spec)[0]
    width = model.text_token_embedding_dim if run.method == "oti" else model.visual_token_embedding_dim
    if tokens.shape[2] != width:
        tower = "text" if run.method == "oti" else "vision"
        raise ReferenceImportError(f"{run.folder / TOKEN_FILES[run.method]}: tokens have width {tokens.shape[2]}, "
                                   f"the {model_slug} {tower} tower expects {width}")
    if run.method == "oti":
        feats = oti_features(tokens, model, template_sentence=params["template"])
    else:
        feats = ovi_features(tokens, model)
    extras = {"pseudo_tokens": tokens}
    losses = sample_losses(run, params["steps"])
    if losses is not None:
        extras["losses"] = losses[torch.as_tensor(order, dtype=torch.long)]
    hyper = run.hyperparameters
    fs = FeatureSet(feats, targets.ids, extras=extras, meta={
        "kind": run.method, "model": model_slug, "dataset": dataset, "shard": None, "num_shards": 1, "rows": None,
        "num_targets": len(targets.ids), "params": params, "batch_size": hyper.get("batch_size"), "seconds": 0.0,
        **runtime_meta(),
        "imported_from": {"implementation": "miccunifi/Cross-the-Gap", "folder": str(Path(run_dir).absolute()),
                          "naming": scheme, "reference_rows": len(run.names), "set": inverted,
                          "hyperparameters": hyper}})
    save_feature_set(path, fs)
    log.info("imported %s (%d %s inversions, naming %r) as %s", run.folder, len(targets.ids), run.method, scheme,
             path)
    return path, fs
