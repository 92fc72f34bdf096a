"""Tar shards: image rows that point into a tar file, and a sequential member reader with clear errors.

A manifest ``path`` of the form ``"<shard>.tar#<member>"`` (relative to the manifest root)
names the member ``<member>`` of the tar file ``<shard>.tar``; :func:`member_ref` writes it
and :func:`parse_member_ref` reads it back. Members are read in file order straight from
the tar (nothing is unpacked to disk) with the standard library's :mod:`tarfile`: shards are
plain, uncompressed POSIX tars, the reader must name the exact member and byte offset where
a shard is truncated, and it needs no extra runtime dependency.

Samples are grouped as WebDataset groups them (``webdataset.tariterators.base_plus_ext`` and
``group_by_keys`` with ``lcase=True``, read in webdataset 1.0.2): a member's key is its name
up to the first ``.`` of its file name and its extension is the rest, lower-cased;
consecutive members with the same key form a sample; names like ``__key__`` are skipped.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from crossgap.datasets.errors import DatasetError

TAR_SUFFIX = ".tar"
MEMBER_SEP = "#"
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_META = re.compile(r"__[^/]*__($|/)")


class TarReadError(DatasetError, OSError):
    """A tar shard cannot be read: ``path`` is the shard, ``member`` the member being read (or None)."""

    def __init__(self, path: str | os.PathLike, member: str | None, message: str) -> None:
        self.path, self.member = str(path), member
        super().__init__(message)


class NamedBytes(io.BytesIO):
    """A member's bytes that print as its ``"<shard>.tar#<member>"`` reference (so errors name the member)."""

    def __init__(self, data: bytes, ref: str) -> None:
        super().__init__(data)
        self.ref = ref

    def __str__(self) -> str:
        return self.ref

    __repr__ = __str__  # PIL names an unidentifiable file with %r


def read_member(tar_path: str | os.PathLike, member: str) -> bytes:
    """The bytes of one member (random access; for re-checking a member found broken)."""
    try:
        with tarfile.open(tar_path, "r:") as tf:
            handle = tf.extractfile(member)
            if handle is None:
                raise TarReadError(tar_path, member, f"{tar_path}: member {member!r} is not a regular file")
            return handle.read()
    except (KeyError, tarfile.TarError, OSError) as exc:
        if isinstance(exc, TarReadError):
            raise
        raise TarReadError(tar_path, member, f"{tar_path}: cannot read member {member!r}: {exc}") from exc


def member_ref(tar_path: str, member: str) -> str:
    """``"<tar_path>#<member>"``: a manifest path pointing at a member of a tar shard."""
    if not tar_path.endswith(TAR_SUFFIX):
        raise ValueError(f"{tar_path!r}: a tar member reference needs a path ending in {TAR_SUFFIX}")
    return f"{tar_path}{MEMBER_SEP}{member}"


def parse_member_ref(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(tar path, member)`` of a ``"...x.tar#member"`` path, or ``None`` for an ordinary file path."""
    text = str(path)
    cut = text.find(TAR_SUFFIX + MEMBER_SEP)
    if cut < 0:
        return None
    return Path(text[: cut + len(TAR_SUFFIX)]), text[cut + len(TAR_SUFFIX) + len(MEMBER_SEP) :]


def key_and_ext(name: str) -> tuple[str, str] | None:
    """WebDataset's ``(key, extension)`` of a member name (extension lower-cased), or ``None``."""
    match = _KEY_EXT.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def iter_members(
    path: str | os.PathLike, read: Callable[[str], bool] = lambda name: True
) -> Iterator[tuple[str, bytes | None]]:
    """``(name, data)`` of every regular member of the tar at ``path``, in file order.

    ``data`` is read only when ``read(name)`` (else ``None``; the reader seeks past it).
    A missing, empty, truncated or malformed shard raises :class:`TarReadError` naming the
    file, the member and the byte offset.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        tf = tarfile.open(path, "r:")
    except FileNotFoundError:
        raise TarReadError(path, None, f"{path}: tar shard does not exist") from None
    except (tarfile.TarError, OSError) as exc:
        raise TarReadError(path, None, f"{path}: not a readable tar file ({exc})") from exc
    last: str | None = None
    with tf:
        while True:
            try:
                info = tf.next()
            except tarfile.TarError as exc:
                where = f"after member {last!r}" if last else "at its first member"
                raise TarReadError(
                    path, None, f"{path}: truncated or corrupt tar {where} (header at byte {tf.offset} of {size}: {exc})"
                ) from exc
            if info is None:
                # tarfile ends quietly at a header cut short; a complete tar ends with zero blocks
                tf.fileobj.seek(tf.offset)
                tail = tf.fileobj.read(tarfile.BLOCKSIZE)
                if len(tail) < tarfile.BLOCKSIZE or tail.count(0) != tarfile.BLOCKSIZE:
                    after = f"after member {last!r}" if last else "before its first member"
                    raise TarReadError(path, None, f"{path}: truncated tar: it ends {after} without the "
                                       f"end-of-archive blocks (byte {tf.offset} of {size})")
                return
            if not info.isreg():
                continue
            if info.offset_data + info.size > size:
                raise TarReadError(
                    path, info.name,
                    f"{path}: tar is truncated inside member {info.name!r} (its {info.size} bytes start at byte "
                    f"{info.offset_data}, the file ends at byte {size})",
                )
            data = None
            if read(info.name):
                try:
                    handle = tf.extractfile(info)
                    data = handle.read() if handle is not None else b""
                except (tarfile.TarError, OSError) as exc:
                    raise TarReadError(path, info.name, f"{path}: cannot read member {info.name!r}: {exc}") from exc
            last = info.name
            yield info.name, data


@dataclass
class Sample:
    """One WebDataset sample: its key and ``{extension: (member name, data or None)}``."""

    key: str
    members: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)

    def first(self, extensions: tuple[str, ...]) -> str | None:
        """The first of ``extensions`` the sample has (WebDataset's ``to_tuple("webp;png;...")`` rule)."""
        return next((ext for ext in extensions if ext in self.members), None)


def iter_samples(path: str | os.PathLike, read: Callable[[str], bool] = lambda ext: True) -> Iterator[Sample]:
    """Samples of the tar at ``path`` in file order; member data is read when ``read(extension)``.

    A sample is yielded once the next key starts (or the shard ends cleanly), so when a
    :class:`TarReadError` interrupts a shard, every sample yielded before it is complete.
    A repeated extension within one sample raises :class:`TarReadError` (as WebDataset does).
    """
    current: Sample | None = None

    def wanted(name: str) -> bool:
        parts = key_and_ext(name)
        return parts is not None and read(parts[1])

    members = iter_members(path, wanted)
    while True:
        try:
            item = next(members, None)
        except TarReadError as exc:
            # a member of the next sample is broken: the current sample ended cleanly before it
            broken = key_and_ext(exc.member) if exc.member else None
            if current is not None and broken is not None and broken[0] != current.key:
                yield current
            raise
        if item is None:
            break
        name, data = item
        parts = key_and_ext(name)
        if parts is None or _META.match(name):
            continue
        key, ext = parts
        if current is not None and key != current.key:
            yield current
            current = None
        current = current or Sample(key)
        if ext in current.members:
            raise TarReadError(path, name, f"{path}: member {name!r} repeats extension {ext!r} of sample {key!r}")
        current.members[ext] = (name, data)
    if current is not None:
        yield current
