"""The method contract: what a transform module declares, checked when the registry discovers it.

A transform module of :mod:`crossgap.methods` defines ``fit(refs, **params)`` and
``apply(features, stats, *, modality, role, **params)`` and declares one method with ``SPEC``
(a dict), or several variants sharing ``fit``/``apply`` with ``SPECS`` (a tuple of dicts; e.g.
``pca_text`` and ``pca_text_dataset``).  Each dict becomes a frozen :class:`MethodSpec`;
unknown or missing keys, a task the registry does not know, a reference list per task that
misses a task, or a recipe per task that misses one are a :class:`MethodContractError` naming
the module, so a mistake fails at import time and never as a missing table row.

Keys (``*`` = required):

* ``name``\\*: the method's name (result files ``<task>/<name>.json``);
* ``tasks``\\*: the tasks it runs on;
* ``references``\\*: ``{task: (reference keys...)}`` it is fitted on (keys of the DAG's
  references, :func:`crossgap.plan.available_references`); ``fallbacks``: ``{key: other key}``
  used when the first is not available;
* ``params``\\*: default parameters; ``task_params``: ``{task: {param: value}}`` overriding them per
  task (e.g. IsoCLIP's text-retrieval ``k_top``/``k_bottom``); ``evaluation.method_params``
  overrides both, per model and per task (:func:`crossgap.plan.method_params`);
* ``features``: ``projected`` (default) or ``pre`` (pre-projection features);
* ``transforms``: the roles ``apply`` changes (``query``, ``gallery``);
* ``description``\\*: one line for the README's method table and the report;
* ``recipe``\\*: a :class:`Recipe` dict (whose method it follows, and which variant), or
  ``{task: recipe}``; a module may also define ``recipe(task, params) -> dict`` when the recipe
  depends on a parameter (``gap_shift``'s ``form``).

**Unavailable, declared.**  A method may make itself unavailable only by raising
:class:`MethodUnavailable` (a capability the model or dataset lacks: a tower without a linear
projection, fewer singular directions than IsoCLIP removes, a span of fewer than two names).
Any other exception inside ``fit``/``apply`` fails the job with its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping

TASKS: tuple[str, ...] = ("image_retrieval", "text_retrieval", "zero_shot")
FEATURES: tuple[str, ...] = ("projected", "pre")
ROLES: tuple[str, ...] = ("query", "gallery")
#: keys of ``evaluation.method_params.<method>`` that nest other values (so no parameter may be named so)
NESTING_KEYS: tuple[str, ...] = ("tasks", "models")

_REQUIRED = ("name", "tasks", "references", "params", "description", "recipe")
_OPTIONAL = ("fallbacks", "task_params", "features", "transforms")


class MethodUnavailable(RuntimeError):
    """The method cannot run on this model or dataset (a declared capability check); the message says why.

    The evaluation steps record such a result with its reason (``extra.unavailable``), and the
    report shows the row with that reason.  Raise nothing else to mean "unavailable".
    """


class MethodContractError(TypeError):
    """A method module's declaration breaks the contract; the message names the module and the key."""


@dataclass(frozen=True)
class Recipe:
    """Whose method a result follows: the authors, their code, and which variant crossgap runs.

    ``source``: the authors and paper; ``repository``/``file``: the code matched (``None`` for
    crossgap's own variants); ``variant``: what exactly runs (the span, the form, the parameters'
    meaning), in one sentence.
    """

    source: str
    variant: str
    repository: str | None = None
    file: str | None = None

    @classmethod
    def from_dict(cls, where: str, value: Mapping[str, Any]) -> "Recipe":
        if isinstance(value, Recipe):
            return value
        if not isinstance(value, Mapping):
            raise MethodContractError(f"{where}: recipe must be a dict with source, variant, repository, file")
        unknown = sorted(set(value) - {"source", "variant", "repository", "file"})
        missing = sorted({"source", "variant"} - set(value))
        if unknown or missing:
            raise MethodContractError(f"{where}: recipe has unknown keys {unknown} / lacks {missing}")
        return cls(**dict(value))

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "variant": self.variant, "repository": self.repository, "file": self.file}


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class MethodSpec:
    """A validated method declaration (one entry of a module's ``SPEC`` / ``SPECS``)."""

    name: str
    module: str
    tasks: tuple[str, ...]
    references: Mapping[str, tuple[str, ...]]
    params: Mapping[str, Any]
    description: str
    recipes: Mapping[str, Recipe]
    fallbacks: Mapping[str, str] = field(default_factory=dict)
    task_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    features: str = "projected"
    transforms: tuple[str, ...] = ("query", "gallery")
    recipe_hook: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None

    def defaults(self, task: str) -> dict[str, Any]:
        """The parameters of ``task`` before any configuration: ``params`` updated by ``task_params``."""
        return {**self.params, **self.task_params.get(task, {})}

    def recipe(self, task: str, params: Mapping[str, Any]) -> Recipe:
        """The recipe a run of ``task`` with ``params`` follows (the module's hook, else the declared one)."""
        if self.recipe_hook is not None:
            return Recipe.from_dict(f"{self.module}.recipe", self.recipe_hook(task, params))
        return self.recipes[task]


def build_specs(module_name: str, module: Any) -> tuple[MethodSpec, ...]:
    """The :class:`MethodSpec` of each declaration of ``module`` (``SPEC`` or ``SPECS``); () without either."""
    single, several = getattr(module, "SPEC", None), getattr(module, "SPECS", None)
    if single is None and several is None:
        return ()
    if single is not None and several is not None:
        raise MethodContractError(f"{module_name}: define SPEC or SPECS, not both")
    for fn in ("fit", "apply"):
        if not callable(getattr(module, fn, None)):
            raise MethodContractError(f"{module_name}: a method module must define {fn}()")
    declared = (single,) if single is not None else tuple(several)
    hook = getattr(module, "recipe", None)
    return tuple(_spec(module_name, raw, hook if callable(hook) else None) for raw in declared)


def _spec(module_name: str, raw: Mapping[str, Any], hook) -> MethodSpec:
    if not isinstance(raw, Mapping):
        raise MethodContractError(f"{module_name}: SPEC must be a dict, got {type(raw).__name__}")
    where = f"{module_name}: SPEC {raw.get('name', '?')!r}"
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    missing = [key for key in _REQUIRED if key not in raw]
    if unknown:
        raise MethodContractError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_REQUIRED + _OPTIONAL)}")
    if missing:
        raise MethodContractError(f"{where}: missing key(s) {missing}")
    tasks = tuple(raw["tasks"])
    bad = [t for t in tasks if t not in TASKS]
    if not tasks or bad:
        raise MethodContractError(f"{where}: tasks {list(tasks)} must be a non-empty subset of {list(TASKS)}")
    refs = raw["references"]
    if not isinstance(refs, Mapping) or set(refs) != set(tasks):
        raise MethodContractError(f"{where}: references must map every task {list(tasks)} to its reference keys, "
                                  f"got {refs!r}")
    params = dict(raw["params"])
    reserved = sorted(set(params) & set(NESTING_KEYS))
    if reserved:
        raise MethodContractError(f"{where}: parameter names {reserved} are reserved for evaluation.method_params")
    task_params = {task: dict(values) for task, values in dict(raw.get("task_params", {})).items()}
    for task, values in task_params.items():
        if task not in tasks or set(values) - set(params):
            raise MethodContractError(f"{where}: task_params[{task!r}] must be a task of the method and name only "
                                      f"its params {sorted(params)}")
    features = raw.get("features", "projected")
    if features not in FEATURES:
        raise MethodContractError(f"{where}: features must be one of {FEATURES}, got {features!r}")
    roles = tuple(raw.get("transforms", ROLES))
    if not roles or set(roles) - set(ROLES):
        raise MethodContractError(f"{where}: transforms must be a non-empty subset of {ROLES}, got {list(roles)}")
    recipe = raw["recipe"]
    if isinstance(recipe, Mapping) and set(recipe) <= set(TASKS) and recipe:
        if set(recipe) != set(tasks):
            raise MethodContractError(f"{where}: a recipe per task must cover every task {list(tasks)}")
        recipes = {task: Recipe.from_dict(f"{where}, task {task}", recipe[task]) for task in tasks}
    else:
        one = Recipe.from_dict(where, recipe)
        recipes = {task: one for task in tasks}
    return MethodSpec(
        name=str(raw["name"]), module=module_name, tasks=tasks,
        references=_frozen({task: tuple(keys) for task, keys in refs.items()}),
        params=_frozen(params), description=str(raw["description"]), recipes=_frozen(recipes),
        fallbacks=_frozen(raw.get("fallbacks")), task_params=_frozen({t: _frozen(v) for t, v in task_params.items()}),
        features=features, transforms=roles, recipe_hook=hook,
    )
