"""Evaluation methods per task: a light registry (no torch), read by the plan, results and report.

A method is *native* (the task's own features: image→image, text→text, standard zero-shot) or
*inverted* (it reads the output of an inversion: ``oti`` or ``ovi``).  Inverted methods' result
files carry the inversion's tag (``oti-<tag>.json``) so each parameter set keeps its results.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One evaluation method of one task."""

    name: str
    task: str
    #: the inversion whose files it reads (``"oti"`` / ``"ovi"``), ``None`` for a native method
    inversion: str | None = None

    @property
    def native(self) -> bool:
        return self.inversion is None


_REGISTRY: dict[str, dict[str, Method]] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to its task; a name may be registered once per task."""
    task = _REGISTRY.setdefault(method.task, {})
    if method.name in task:
        raise ValueError(f"method {method.name!r} is already registered for task {method.task!r}")
    task[method.name] = method
    return method


def task_methods(task: str) -> tuple[Method, ...]:
    """The methods of ``task``, native first, in registration order."""
    if task not in _REGISTRY:
        raise KeyError(f"unknown task {task!r}; known tasks: {sorted(_REGISTRY)}")
    return tuple(_REGISTRY[task].values())


def get_method(task: str, name: str) -> Method:
    methods = _REGISTRY.get(task, {})
    if name not in methods:
        raise KeyError(f"method {name!r} is not registered for task {task!r}; known: {sorted(methods)}")
    return methods[name]


def native_method(task: str) -> Method:
    return next(m for m in task_methods(task) if m.native)


for _method in (
    Method("image", "image_retrieval"),
    Method("oti", "image_retrieval", inversion="oti"),
    Method("text", "text_retrieval"),
    Method("ovi", "text_retrieval", inversion="ovi"),
    Method("standard", "zero_shot"),
    Method("oti", "zero_shot", inversion="oti"),
    Method("ovi", "zero_shot", inversion="ovi"),
):
    register_method(_method)

TASKS: tuple[str, ...] = tuple(_REGISTRY)
#: ``{task: (method names...)}``, native first
TASK_METHODS: dict[str, tuple[str, ...]] = {task: tuple(m.name for m in task_methods(task)) for task in TASKS}
