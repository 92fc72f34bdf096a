"""Evaluation methods per task: one registry, read by the plan, the rules, evaluation and the report.

A method is one of four kinds:

* ``native``: the task's own features (image→image, text→text, standard zero-shot);
* ``inverted``: the output of an inversion (``oti`` / ``ovi``); result files carry the inversion's
  tag (``oti-<tag>.json``), so each parameter set keeps its results;
* ``snapshot``: an inversion's tokens at an intermediate step (``oti@50``), saved during the same
  optimisation (``inversion.<oti|ovi>.snapshots``) and evaluated like the final ones;
* ``transform``: a training-free map of query and/or gallery features (``gap_shift``, ``centered``,
  ``isoclip``, ``pca_text``), fitted on reference features the protocol allows.

Adding a transform is **one module** in this package with a ``SPEC`` dict and ``fit``/``apply``
functions (see ``gap_shift.py``): modules are discovered here, so nothing else changes.  Reading
the registry never imports torch (modules import it inside ``fit``/``apply``), so dry runs stay fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

KINDS = ("native", "inverted", "snapshot", "transform")
SNAPSHOT = re.compile(r"^(oti|ovi)@(\d+)$")


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
    #: transform: reference features it is fitted on, for this task (keys of the DAG's references)
    references: tuple[str, ...] = ()
    #: transform: reference key -> the key used when the first is not available
    fallbacks: Mapping[str, str] = field(default_factory=dict)
    #: transform: ``projected`` or ``pre`` (pre-projection) query/gallery features
    features: str = "projected"
    #: transform: default parameters (``evaluation.method_params.<name>`` overrides them)
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def native(self) -> bool:
        return self.kind == "native"

    def file_stem(self, tags: Mapping[str, str]) -> str:
        """Result file stem: ``oti-<tag>``, ``oti@50-<tag>`` for inversions, the name otherwise."""
        return f"{self.name}-{tags[self.inversion]}" if self.inversion else self.name


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
    snap = SNAPSHOT.match(name)
    if snap and snap.group(1) in _REGISTRY.get(task, {}):
        return snapshot_method(task, snap.group(1), int(snap.group(2)))
    methods = _REGISTRY.get(task, {})
    if name not in methods:
        raise KeyError(f"method {name!r} is not registered for task {task!r}; known: {sorted(methods)}")
    return methods[name]


def snapshot_method(task: str, inversion: str, step: int) -> Method:
    return Method(f"{inversion}@{step}", task, "snapshot", inversion=inversion)


def native_method(task: str) -> Method:
    return next(m for m in task_methods(task) if m.native)


def transform_names() -> tuple[str, ...]:
    """Names of every registered transform (any task), sorted."""
    return tuple(sorted({m.name for methods in _REGISTRY.values() for m in methods.values() if m.kind == "transform"}))


def transform_spec(name: str) -> Mapping[str, Any]:
    """The ``SPEC`` of transform ``name`` (its tasks, references, parameters)."""
    for methods in _REGISTRY.values():
        if name in methods and methods[name].kind == "transform":
            return MappingProxyType(_SPECS[name])
    raise KeyError(f"unknown method {name!r}; registered transforms: {list(transform_names())}")


for _method in (
    Method("image", "image_retrieval", "native", description="native image queries"),
    Method("oti", "image_retrieval", "inverted", inversion="oti", description="OTI-inverted image queries"),
    Method("text", "text_retrieval", "native", description="native text queries"),
    Method("ovi", "text_retrieval", "inverted", inversion="ovi", description="OVI-inverted text queries"),
    Method("oti_gallery", "image_retrieval", "inverted", inversion="oti", gallery="inverted",
           description="OTI queries against an OTI-inverted gallery (intra-modal control)"),
    Method("ovi_gallery", "text_retrieval", "inverted", inversion="ovi", gallery="inverted",
           description="OVI queries against an OVI-inverted gallery (intra-modal control)"),
    Method("standard", "zero_shot", "native", description="images vs class prompts"),
    Method("oti", "zero_shot", "inverted", inversion="oti", description="OTI-inverted images vs prompts"),
    Method("ovi", "zero_shot", "inverted", inversion="ovi", description="images vs OVI-inverted prompts"),
):
    register_method(_method)

_SPECS: dict[str, dict[str, Any]] = {}


def _register_transforms() -> None:
    """Register every module of this package that defines ``SPEC`` (one method, several tasks)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = f"{__name__}.{info.name}"
        spec = getattr(importlib.import_module(module), "SPEC", None)
        if spec is None:
            continue
        _SPECS[spec["name"]] = dict(spec)
        for task in spec["tasks"]:
            refs = spec.get("task_references", {}).get(task, spec.get("references", ()))
            register_method(Method(spec["name"], task, "transform", module=module, references=tuple(refs),
                                   fallbacks=dict(spec.get("fallbacks", {})), features=spec.get("features", "projected"),
                                   params=dict(spec.get("params", {})), description=spec.get("description", "")))


_register_transforms()

TASKS: tuple[str, ...] = ("image_retrieval", "text_retrieval", "zero_shot")
#: ``{task: (method names...)}`` of the registered methods, native first
TASK_METHODS: dict[str, tuple[str, ...]] = {task: tuple(m.name for m in task_methods(task)) for task in TASKS}
