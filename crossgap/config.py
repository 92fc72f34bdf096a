"""Typed, frozen settings built once from the validated ``params.yaml``.

Inversion parameters come in two kinds, and the distinction is what keeps finished GPU work
addressable:

* **result fields** change what an inversion computes (steps, learning rate, template, seed, ...).
  They are hashed into the inversion's tag (``oti-<tag>``/``ovi-<tag>`` folders) and passed to
  the inversion rules as ``params:``, so a change re-addresses and reruns exactly that inversion.
* **runtime fields** change only memory, speed or bookkeeping (``batch_size``, ``shard_size``,
  ``resume_every``, ``deterministic``): never hashed, never Snakemake ``params:``, so changing
  them reruns nothing that is finished.

Tags have a *canonical form* that stays stable as crossgap grows: the fields that existed when
tags were introduced (:data:`ALWAYS_HASHED`) are always hashed, together with the batch size those
tags recorded (frozen at :data:`V1_BATCH_SIZE`: results do not depend on it); every field added
later is hashed only when its value differs from its default.  So adding a result field whose
default reproduces today's behaviour leaves every existing tag valid.

Defaults live in ``workflow/schemas/params.schema.yaml`` (Snakemake fills them in when it
validates the config); :func:`load_params` does the same for library and test use.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

#: the configuration schema (descriptions and the one default of every key)
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"

METHODS = ("oti", "ovi")

#: result fields hashed since tags were introduced, per inversion method (always in the hash)
ALWAYS_HASHED: dict[str, tuple[str, ...]] = {
    "oti": ("steps", "num_pseudo_tokens", "template", "learning_rate", "weight_decay", "seed"),
    "ovi": ("steps", "num_pseudo_tokens", "learning_rate", "weight_decay", "seed"),
}
#: the batch size every v1 tag recorded; kept in the canonical form so v1 tags stay valid
V1_BATCH_SIZE = 64

#: result fields added after v1, with the default that reproduces v1 behaviour: hashed only when
#: a config sets another value.  (Add new result fields here, with their schema entry.)
#: ``precision``: autocast of the optimisation on CUDA (``inversion.precision``; v1 ran fp16 with a
#: GradScaler on GPUs without bf16 and fp32 on the CPU, which stays fp32 whatever is set).
#: ``template`` (OVI): the sentence each class name fills for the OVI zero-shot targets.
#: ``underscores_as_spaces`` (OVI): the inverted texts (queries, inverted galleries) re-encoded with ``_``
#: read as a space, as the reference's ``src/ovi.py`` does (``text.replace("_", " ")``) while its native
#: baseline keeps the text as is; v1 inverted the stored native features.
HASHED_WHEN_NOT_DEFAULT: dict[str, dict[str, Any]] = {
    "oti": {"precision": "fp16"},
    "ovi": {"template": "a photo of {}", "precision": "fp16", "underscores_as_spaces": False},
}
#: result fields set once under ``inversion:`` for both methods (the rest live under ``inversion.<method>``)
SHARED_FIELDS = ("seed", "precision")

#: inversion keys that never change results (not hashed, not rule params)
RUNTIME_FIELDS = ("batch_size", "shard_size", "resume_every", "checkpoint_every", "deterministic")

#: feature-extraction keys that change results (rule params when non-default; the rest is runtime)
FEATURE_RESULT_FIELDS = ("precision",)


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key."""


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    if not SCHEMA_PATH.is_file():
        raise ConfigError(f"{SCHEMA_PATH}: configuration schema not found (crossgap runs from a repository checkout)")
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=None)
def schema_default(key: str) -> Any:
    """The schema's default of the dotted ``key`` (e.g. ``"features.batch_size"``).

    The schema is the one place each configured default lives: a library signature that needs a
    default for a configured value takes it from here (``batch_size: int = schema_default(...)``),
    never from a literal of its own.  ``*`` stands for any entry of a mapping (``"models.*.ovi_tokens"``).
    ``KeyError`` names a key the schema does not have or gives no default.
    """
    node: Mapping[str, Any] = _schema()
    for part in key.split("."):
        nxt = node.get("additionalProperties") if part == "*" else node.get("properties", {}).get(part)
        if not isinstance(nxt, Mapping):
            raise KeyError(f"{SCHEMA_PATH.name}: no key {key!r} (at {part!r})")
        node = nxt
    if "default" not in node:
        raise KeyError(f"{SCHEMA_PATH.name}: {key!r} has no default")
    value = node["default"]
    return tuple(value) if isinstance(value, list) else value


def load_params(params: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Validate ``params`` (a dict or a YAML file) against the schema and fill in defaults, as Snakemake does."""
    import jsonschema

    data = yaml.safe_load(Path(params).read_text()) if isinstance(params, (str, Path)) else copy.deepcopy(dict(params))
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    validator = jsonschema.validators.extend(base, {"properties": set_defaults})(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "<top level>"
        raise ConfigError(f"params: {where}: {first.message}")
    return data


@dataclass(frozen=True)
class InversionParams:
    """The result fields of one inversion (OTI or OVI) of one model: what its tag addresses."""

    method: str
    fields: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    def canonical(self) -> dict[str, Any]:
        """The hashed form: v1 fields (+ the v1 batch size), later fields only when non-default."""
        values = self.as_dict()
        out = {name: values[name] for name in ALWAYS_HASHED[self.method]}
        out["batch_size"] = V1_BATCH_SIZE
        for name, default in HASHED_WHEN_NOT_DEFAULT[self.method].items():
            if values.get(name, default) != default:
                out[name] = values[name]
        return out

    @property
    def tag(self) -> str:
        """10 hex digits of a SHA-256 of the canonical JSON (the ``oti-<tag>`` / ``ovi-<tag>`` address)."""
        return canonical_tag(self.canonical())

    def rule_params(self) -> dict[str, Any]:
        """What the rules receive as ``params:``: v1 fields, later fields only when non-default.

        A later field at its default is absent, so adding it changes no finished job's params;
        jobs fill it in again with :func:`complete_params`.
        """
        values = self.as_dict()
        out = {name: values[name] for name in ALWAYS_HASHED[self.method]}
        out.update({name: values[name] for name, default in HASHED_WHEN_NOT_DEFAULT[self.method].items()
                    if values.get(name, default) != default})
        return out


def canonical_tag(canonical: Mapping[str, Any]) -> str:
    """SHA-256 (10 hex digits) of the sorted, compact JSON of ``canonical``."""
    text = json.dumps(dict(canonical), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def inversion_params(config: Mapping[str, Any], method: str, model: str, seed: int | None = None) -> InversionParams:
    """Result fields of ``method`` for ``model`` from a validated config (defaults filled in).

    OTI: ``inversion.oti`` + ``inversion.seed``.  OVI: ``inversion.ovi`` + ``inversion.seed`` +
    the model's pseudo-patch count ``models.<model>.ovi_tokens`` (P differs per backbone).
    ``seed``: another seed of the same inversion (one of ``inversion.seeds``) instead of ``inversion.seed``.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown inversion method {method!r}; expected one of {METHODS}")
    inv = config["inversion"]
    values = dict(inv[method])
    for name in SHARED_FIELDS:
        if name in inv:
            values[name] = inv[name]
    if seed is not None:
        values["seed"] = int(seed)
    if method == "ovi":
        values["num_pseudo_tokens"] = config["models"][model].get("ovi_tokens", 1)
    wanted = (*ALWAYS_HASHED[method], *HASHED_WHEN_NOT_DEFAULT[method])
    missing = [name for name in ALWAYS_HASHED[method] if name not in values]
    if missing:
        raise ConfigError(f"params: inversion.{method}: missing {missing} (validate the config first)")
    return InversionParams(method, tuple((name, values[name]) for name in wanted if name in values))


def inversion_seeds(config: Mapping[str, Any]) -> tuple[int, ...]:
    """Every seed each inversion runs with: ``inversion.seed`` first (the reported result, with the
    paired intervals), then the other ``inversion.seeds`` in ascending order (the replicates whose
    mean and spread the summary adds)."""
    inv = config["inversion"]
    primary = int(inv.get("seed", 0))
    return (primary, *sorted({int(s) for s in inv.get("seeds", ())} - {primary}))


def complete_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Rule params (:meth:`InversionParams.rule_params`) with the later fields' defaults filled in."""
    if method not in METHODS:
        raise ConfigError(f"unknown inversion method {method!r}; expected one of {METHODS}")
    return {**HASHED_WHEN_NOT_DEFAULT[method], **dict(params)}


@dataclass(frozen=True)
class InversionRuntime:
    """Runtime settings of the inversion jobs: memory, bookkeeping and reproducibility, never hashed.

    ``batch_size``: targets optimised together, or ``"auto"`` (the largest that fits; results do not
    depend on it: the loss is a sum of per-sample losses and AdamW is element-wise).  ``shard_size``: targets per job.
    ``resume_every``: finished batches between two saves of a shard's resume file (the former key
    ``checkpoint_every`` is still read; both given with different values is an error).
    ``deterministic``: ``torch.use_deterministic_algorithms(True)`` and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set by :func:`crossgap.runtime.job_setup` before CUDA starts.
    """

    batch_size: int | str
    shard_size: int
    resume_every: int
    deterministic: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "InversionRuntime":
        inv = config["inversion"]
        batch = inv["batch_size"] if inv["batch_size"] == "auto" else int(inv["batch_size"])
        every = int(inv.get("resume_every", schema_default("inversion.resume_every")))
        if "checkpoint_every" in inv:  # the former name
            old = int(inv["checkpoint_every"])
            if every not in (old, schema_default("inversion.resume_every")):
                raise ConfigError(f"params: inversion.checkpoint_every ({old}) and inversion.resume_every ({every}) "
                                  "disagree: give resume_every only (checkpoint_every is its former name)")
            every = old
        return cls(batch_size=batch, shard_size=int(inv["shard_size"]), resume_every=every,
                   deterministic=bool(inv.get("deterministic", False)))


@dataclass(frozen=True)
class FeatureRuntime:
    """Runtime settings of feature extraction (memory and loader workers, never results)."""

    batch_size: int
    num_workers: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "FeatureRuntime":
        feats = config["features"]
        return cls(batch_size=int(feats["batch_size"]), num_workers=int(feats["num_workers"]))


#: the keys of a ``models:`` entry that loading a model reads (feature extraction, inversion)
MODEL_LOAD_KEYS = ("backend", "architecture", "pretrained")


def trained_checkpoint(model: str) -> str:
    """Where the pipeline writes the checkpoint of a model it trains itself (``pretrain: true``)."""
    return f"data/models/{model}/checkpoint.pt"


def model_load_spec(model_cfg: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The part of a ``models:`` entry that loading the model uses (not ``ovi_tokens`` nor ``pretrain``).

    A model the pipeline trains (``pretrain: true``) loads :func:`trained_checkpoint` of its key
    ``model``; its entry needs no ``pretrained`` (one given must be that path).
    """
    spec = {key: model_cfg.get(key) for key in MODEL_LOAD_KEYS}
    if model_cfg.get("pretrain"):
        trained = trained_checkpoint(model)
        if spec["pretrained"] not in (None, trained):
            raise ConfigError(f"params: models.{model}.pretrained: {spec['pretrained']!r}, but a model with "
                              f"pretrain: true is loaded from the checkpoint the pipeline trains, {trained!r} "
                              "(leave pretrained out)")
        spec["pretrained"] = trained
    return spec


#: keys of a ``datasets:`` entry that only plan the DAG and never reach the manifest
DATASET_PLAN_KEYS = ("generate", "sizes", "inverted_gallery")
#: the key of a ``datasets:`` entry that the text-preparation step reads (not the source manifest)
DATASET_TEXT_KEY = "text"


def dataset_source(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``datasets:`` entry that preparing the (source) manifest reads."""
    return {key: value for key, value in dataset_cfg.items()
            if key not in DATASET_PLAN_KEYS and key != DATASET_TEXT_KEY}


def text_defaults() -> dict[str, Any]:
    """The schema's defaults of a ``datasets.<name>.text`` entry (``llm`` included)."""
    props = _schema()["properties"]["datasets"]["additionalProperties"]["properties"][DATASET_TEXT_KEY]["properties"]
    out = {key: copy.deepcopy(spec["default"]) for key, spec in props.items() if "default" in spec}
    out["llm"] = {key: copy.deepcopy(spec["default"]) for key, spec in props["llm"]["properties"].items()}
    return out


def text_settings(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """A ``text`` entry (or the non-default values of :func:`text_options`) completed with its defaults."""
    values = dict(values or {})
    defaults = text_defaults()
    return {**defaults, **values, "llm": {**defaults["llm"], **dict(values.get("llm") or {})}}


def text_options(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of a ``text`` entry that differ from their defaults (the rule's params; ``llm`` likewise)."""
    defaults, full = text_defaults(), text_settings(values)
    out = {key: value for key, value in full.items() if key != "llm" and value != defaults[key]}
    llm = {key: value for key, value in full["llm"].items() if value != defaults["llm"][key]}
    return {**out, **({"llm": llm} if llm else {})}


@dataclass(frozen=True)
class EvaluationRuntime:
    """Runtime settings of the evaluation jobs: ``chunk_size`` queries per similarity block (memory only)."""

    chunk_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "EvaluationRuntime":
        return cls(chunk_size=int(config["evaluation"]["chunk_size"]))


# --------------------------------------------------------------------------- rule params without defaults
def section_defaults(section: str) -> dict[str, Any]:
    """The schema's defaults of the top-level ``section`` (e.g. ``prepare``, ``features``)."""
    props = _schema()["properties"][section].get("properties", {})
    return {key: copy.deepcopy(spec["default"]) for key, spec in props.items() if "default" in spec}


def non_default(config: Mapping[str, Any], section: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The values of ``config[section]`` (restricted to ``keys``) that differ from their schema defaults.

    Rules receive these as ``params:``, so a key added later at its default leaves the params of
    every finished job unchanged (no rerun); the job rebuilds the full section with
    :func:`with_defaults`.
    """
    defaults = section_defaults(section)
    values = config.get(section, {})
    wanted = keys if keys is not None else tuple(values)
    return {key: values[key] for key in wanted if key in values and values[key] != defaults.get(key, object())}


def with_defaults(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (from :func:`non_default`) completed with the schema's defaults of ``section``."""
    return {**section_defaults(section), **dict(values)}


def feature_result_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The feature rules' result settings (``features.precision``) that differ from their defaults."""
    return non_default(config, "features", FEATURE_RESULT_FIELDS)
