"""The one way crossgap reads a pickle: a restricted unpickler with an allow-list of globals.

A pickle can name any importable callable and have it called while loading, so a file dropped
into a dataroot could run code.  Every pickle crossgap reads (revisited ground truth, reference
summaries, scikit-learn's 20 Newsgroups cache, the reference implementation's ``names.pkl``) goes
through :func:`restricted_load`, which builds plain containers, numbers and strings, plus the few
classes listed in :data:`ALLOWED_GLOBALS` (numpy array reconstruction, scikit-learn's ``Bunch``).
Anything else is refused with :class:`UnsafePickleError`, naming the file and the global.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Iterable

#: ``(module, name)`` globals a pickle may reference.  Numpy arrays and scalars (both module
#: spellings of numpy 1.x / 2.x) and scikit-learn's ``Bunch`` (a dict subclass, in the
#: ``fetch_20newsgroups`` cache).  Nothing that executes arbitrary code when called.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("sklearn.utils._bunch", "Bunch"),
        ("sklearn.utils", "Bunch"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that references a global outside the allow-list, or that cannot be read."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str, allowed: frozenset[tuple[str, str]], **kwargs: Any):
        super().__init__(file, **kwargs)
        self._source = source
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name} from a pickle; only plain data "
            f"(and {', '.join(sorted(f'{m}.{n}' for m, n in self._allowed))}) is accepted"
        )


def restricted_loads(
    data: bytes,
    source: str | os.PathLike = "<bytes>",
    *,
    allowed: Iterable[tuple[str, str]] | None = None,
    encoding: str = "latin1",
) -> Any:
    """Unpickle ``data`` allowing only plain data and :data:`ALLOWED_GLOBALS` (or ``allowed``).

    ``encoding="latin1"`` reads Python 2 pickles of numpy arrays (the revisited ``gnd_*.pkl``).
    Raises :class:`UnsafePickleError` naming ``source`` for a forbidden global or an unreadable pickle.
    """
    allow = ALLOWED_GLOBALS if allowed is None else frozenset(allowed)
    try:
        return _Restricted(io.BytesIO(data), str(source), allow, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError) as exc:
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


def restricted_load(path: str | os.PathLike, **kwargs: Any) -> Any:
    """:func:`restricted_loads` of the file at ``path``."""
    path = Path(path)
    return restricted_loads(path.read_bytes(), path, **kwargs)
