"""Evaluation methods per task: one registry, read by the plan, the rules, evaluation and the report.

A method is one of four kinds:

* ``native``: the task's own features (image→image, text→text, standard zero-shot);
* ``inverted``: the output of an inversion (``oti`` / ``ovi``); result files carry the inversion's
  tag (``oti-<tag>.json``), so each parameter set keeps its results;
* ``snapshot``: an inversion's tokens at an intermediate step (``oti@50``), saved during the same
  optimisation (``inversion.<oti|ovi>.snapshots``) and evaluated like the final ones;
* ``transform``: a training-free map of query and/or gallery features (``gap_shift``, ``centered``,
  ``isoclip``, ``pca_text``, ``pca_text_dataset``), fitted on reference features the protocol allows.

Adding a transform is **one module** in this package with ``SPEC`` (or ``SPECS`` for variants) and
``fit``/``apply`` functions (the contract: :mod:`crossgap.methods.contract`, checked here when the
module is discovered): nothing else changes, ``evaluation.methods`` defaults to every registered
transform and the tests run over the registry.  Reading the registry never imports torch (modules
import it inside ``fit``/``apply``), so dry runs stay fast.  :mod:`crossgap.methods.features` reads the query
and gallery features a method compares, for the evaluation steps.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from crossgap.methods.contract import (  # noqa: F401  (re-exported: the contract's public names)
    TASKS,
    MethodContractError,
    MethodSpec,
    MethodUnavailable,
    Recipe,
    build_specs,
)

KINDS = ("native", "inverted", "snapshot", "transform")
SNAPSHOT = re.compile(r"^(oti|ovi)@(\d+)$")


@dataclass(frozen=True)
class ResultName:
    """The one parser of a result file's stem: ``<method>`` or ``<method>-<tag>``.

    ``oti-3f2a...`` is OTI with its parameters' tag, ``oti@50-3f2a...`` OTI's snapshot after 50 steps
    (``base`` ``oti``, ``step`` 50), ``oti_gallery-...`` OTI with an inverted gallery, ``pca_text`` a transform.
    """

    method: str
    tag: str | None = None

    @classmethod
    def parse(cls, stem: str) -> "ResultName":
        method, _, tag = stem.partition("-")
        return cls(method, tag or None)

    @property
    def base(self) -> str:
        """The method without its snapshot step (``oti`` for ``oti@50``)."""
        return self.method.partition("@")[0]

    @property
    def step(self) -> int | None:
        """The snapshot's step (``50`` for ``oti@50``), ``None`` for the final tokens or a native method."""
        _, _, step = self.method.partition("@")
        return int(step) if step else None

#: the paper's methods (native and inverted queries): miccunifi/Cross-the-Gap
_PAPER = "Mistretta et al., Cross the Gap (ICLR 2025)"
_REFERENCE = "miccunifi/Cross-the-Gap"


@dataclass(frozen=True)
class Method:
    """One evaluation method of one task."""

    name: str
    task: str
    kind: str
    #: the inversion whose files it reads (inverted and snapshot methods)
    inversion: str | None = None
    #: ``inverted``: the gallery is inverted too (the reference's ``--gallery_eval_type``; opt-in per
    #: dataset with ``datasets.<d>.inverted_gallery``); ``native`` otherwise
    gallery: str = "native"
    #: transform: the module with ``fit``/``apply``
    module: str | None = None
    #: snapshot: the optimisation step whose tokens it reads
    step: int | None = None
    #: transform: reference features it is fitted on, for this task (keys of the DAG's references)
    references: tuple[str, ...] = ()
    #: transform: reference key -> the key used when the first is not available
    fallbacks: Mapping[str, str] = field(default_factory=dict)
    #: transform: ``projected`` or ``pre`` (pre-projection) query/gallery features
    features: str = "projected"
    #: transform: default parameters of this task (``evaluation.method_params.<name>`` overrides them)
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: transform: the validated declaration (its recipe may depend on the parameters)
    spec: MethodSpec | None = None
    #: native / inverted / snapshot methods: the recipe they follow
    fixed_recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def native(self) -> bool:
        return self.kind == "native"

    def file_stem(self, tags: Mapping[str, str]) -> str:
        """Result file stem: ``oti-<tag>``, ``oti@50-<tag>`` for inversions, the name otherwise."""
        return f"{self.name}-{tags[self.inversion]}" if self.inversion else self.name

    def recipe(self, params: Mapping[str, Any] | None = None) -> Recipe:
        """The recipe a result of this method with ``params`` follows (recorded in every result file)."""
        if self.spec is not None:
            return self.spec.recipe(self.task, {**self.params, **dict(params or {})})
        assert self.fixed_recipe is not None
        return self.fixed_recipe


_REGISTRY: dict[str, dict[str, Method]] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to its task; a name may be registered once per task."""
    task = _REGISTRY.setdefault(method.task, {})
    if method.name in task:
        raise ValueError(f"method {method.name!r} is already registered for task {method.task!r}")
    task[method.name] = method
    return method


def task_methods(task: str) -> tuple[Method, ...]:
    """The registered methods of ``task`` (native first, then inverted, then transforms)."""
    if task not in _REGISTRY:
        raise KeyError(f"unknown task {task!r}; known tasks: {sorted(_REGISTRY)}")
    return tuple(_REGISTRY[task].values())


def get_method(task: str, name: str) -> Method:
    """The method ``name`` of ``task``; ``oti@<step>`` / ``ovi@<step>`` are snapshots of the inversion."""
    parsed = ResultName(name)
    if SNAPSHOT.match(name) and parsed.base in _REGISTRY.get(task, {}):
        return snapshot_method(task, parsed.base, parsed.step)
    methods = _REGISTRY.get(task, {})
    if name not in methods:
        raise KeyError(f"method {name!r} is not registered for task {task!r}; known: {sorted(methods)}")
    return methods[name]


def snapshot_method(task: str, inversion: str, step: int) -> Method:
    parent = _REGISTRY[task][inversion]
    return Method(f"{inversion}@{step}", task, "snapshot", inversion=inversion, step=step,
                  fixed_recipe=Recipe(parent.fixed_recipe.source, f"{parent.fixed_recipe.variant}, tokens after "
                                      f"{step} steps of the same optimisation (crossgap's snapshots)",
                                      parent.fixed_recipe.repository, parent.fixed_recipe.file))


def native_method(task: str) -> Method:
    return next(m for m in task_methods(task) if m.native)


def transform_names() -> tuple[str, ...]:
    """Names of every registered transform (any task), sorted: the default of ``evaluation.methods``."""
    return tuple(sorted({m.name for methods in _REGISTRY.values() for m in methods.values() if m.kind == "transform"}))


def _paper(variant: str, file: str = "src/retrieval.py") -> Recipe:
    return Recipe(_PAPER, variant, _REFERENCE, file)


for _method in (
    Method("image", "image_retrieval", "native", description="native image queries",
           fixed_recipe=_paper("native image queries against native gallery images")),
    Method("oti", "image_retrieval", "inverted", inversion="oti", description="OTI-inverted image queries",
           fixed_recipe=_paper("OTI-inverted image queries against native gallery images", "src/oti.py")),
    Method("text", "text_retrieval", "native", description="native text queries",
           fixed_recipe=_paper("native text queries against native gallery texts")),
    Method("ovi", "text_retrieval", "inverted", inversion="ovi", description="OVI-inverted text queries",
           fixed_recipe=_paper("OVI-inverted text queries against native gallery texts", "src/ovi.py")),
    Method("oti_gallery", "image_retrieval", "inverted", inversion="oti", gallery="inverted",
           description="OTI queries against an OTI-inverted gallery (intra-modal control)",
           fixed_recipe=_paper("--query_eval_type oti --gallery_eval_type oti", "src/oti.py")),
    Method("ovi_gallery", "text_retrieval", "inverted", inversion="ovi", gallery="inverted",
           description="OVI queries against an OVI-inverted gallery (intra-modal control)",
           fixed_recipe=_paper("--query_eval_type ovi --gallery_eval_type ovi", "src/ovi.py")),
    Method("standard", "zero_shot", "native", description="images vs class prompts",
           fixed_recipe=_paper("images against the averaged class-prompt classifier",
                               "src/classification/zero_shot_classification.py")),
    Method("oti", "zero_shot", "inverted", inversion="oti", description="OTI-inverted images vs prompts",
           fixed_recipe=_paper("OTI-inverted images against the class-prompt classifier",
                               "src/classification/zero_shot_classification.py")),
    Method("ovi", "zero_shot", "inverted", inversion="ovi", description="images vs OVI-inverted prompts",
           fixed_recipe=_paper("native images against OVI-inverted class sentences (use_class_names)",
                               "src/classification/zero_shot_classification.py")),
):
    register_method(_method)

#: the validated declaration of every discovered transform, by name
SPECS: dict[str, MethodSpec] = {}


#: modules of this package that are no transform: the contract, and :mod:`crossgap.methods.features` (reads a
#: method's features from files for the evaluation steps; it imports torch, which the registry must not)
NOT_TRANSFORMS = frozenset({"contract", "features"})


def _register_transforms() -> None:
    """Register every module of this package that declares ``SPEC``/``SPECS`` (one method, several tasks)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in NOT_TRANSFORMS:
            continue
        module = f"{__name__}.{info.name}"
        for spec in build_specs(module, importlib.import_module(module)):
            if spec.name in SPECS:
                raise MethodContractError(f"{module}: method {spec.name!r} is already declared by {SPECS[spec.name].module}")
            SPECS[spec.name] = spec
            for task in spec.tasks:
                register_method(Method(spec.name, task, "transform", module=module,
                                       references=spec.references[task], fallbacks=dict(spec.fallbacks),
                                       features=spec.features, params=spec.defaults(task),
                                       description=spec.description, spec=spec))


_register_transforms()

#: ``{task: (method names...)}`` of the registered methods, native first
TASK_METHODS: dict[str, tuple[str, ...]] = {task: tuple(m.name for m in task_methods(task)) for task in TASKS}
