"""Registry of dataset adapters, keyed by slug.

Adding a dataset is one module that defines an adapter (a
:class:`~crossgap.datasets.base.DatasetAdapter`) and registers it, either with the
:func:`register_dataset` class decorator (the class is instantiated without arguments) or
with :func:`register` on an instance; then import that module in
``crossgap/datasets/__init__.py``. Registering checks the adapter's ``protocol``
(:func:`~crossgap.datasets.protocols.validate_adapter_protocol`) and ``unit``, so a
malformed one fails on import, naming the adapter and the key.
"""

from __future__ import annotations

from typing import TypeVar

from crossgap.datasets.base import COUNT_UNITS, DatasetAdapter
from crossgap.datasets.errors import DatasetError
from crossgap.datasets.protocols import validate_adapter_protocol

_REGISTRY: dict[str, DatasetAdapter] = {}

A = TypeVar("A", bound=DatasetAdapter)
C = TypeVar("C", bound=type)


class UnknownDatasetError(DatasetError, KeyError):
    """No adapter is registered under the requested slug."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


def register(adapter: A) -> A:
    """Register ``adapter`` under ``adapter.slug``; a slug may be registered only once.

    A malformed ``protocol`` raises :class:`~crossgap.datasets.errors.ManifestError` naming the
    adapter and the protocol key; an unknown ``unit`` raises ``ValueError``.
    """
    slug = adapter.slug
    if not slug or not isinstance(slug, str):
        raise ValueError(f"adapter {adapter!r} has no valid 'slug'")
    if slug in _REGISTRY:
        raise ValueError(f"dataset slug {slug!r} is already registered by {_REGISTRY[slug]!r}")
    source = f"dataset adapter {slug!r} ({type(adapter).__module__}.{type(adapter).__qualname__})"
    if adapter.unit not in COUNT_UNITS:
        raise ValueError(f"{source}: 'unit' must be one of {list(COUNT_UNITS)}, got {adapter.unit!r}")
    validate_adapter_protocol(adapter.protocol, source)
    _REGISTRY[slug] = adapter
    return adapter


def register_dataset(cls: C) -> C:
    """Class decorator: register an instance of ``cls`` (built without arguments)."""
    register(cls())
    return cls


def get_adapter(slug: str) -> DatasetAdapter:
    """The adapter registered as ``slug``; :class:`UnknownDatasetError` (a ``KeyError``) lists known slugs."""
    try:
        return _REGISTRY[slug]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {slug!r}; known datasets: {', '.join(list_datasets())}") from None


def list_datasets() -> list[str]:
    """All registered slugs, sorted."""
    return sorted(_REGISTRY)
