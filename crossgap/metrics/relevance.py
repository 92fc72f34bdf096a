"""Relevance sources for retrieval: labels, groups or explicit qrels, as per-query lists.

Every source is reduced to a sorted "CSR" form: ``values`` (gallery indices) grouped per
query, so that the relevant items of a chunk of queries come out as a padded index matrix
``[B, Rmax]`` without ever materialising a dense ``[B, G]`` mask:

* labels / groups: the gallery indices sorted (stably) by key; a query's relevant items are
  the contiguous run of its key, found by two ``searchsorted`` calls;
* qrels as ``(query, gallery)`` pairs: de-duplicated and sorted by ``(query, gallery)``;
* qrels as a dense bool ``[Q, G]`` matrix: converted to pairs once (``nonzero``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence


def as_tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` (tensor, numpy array or sequence) as a tensor on ``device`` (optionally cast)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        # read-only arrays (e.g. pandas' to_numpy()) cannot back a tensor safely: copy those only
        t = torch.as_tensor(arr if arr.flags.writeable else arr.copy())
    return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)


class Relevance:
    """The relevant gallery items of each query, from exactly one source.

    Args:
        n_q, n_g: number of queries and gallery items.
        device: where the lists are built.
        query_labels, gallery_labels: integer ``[Q]`` / ``[G]``: relevant = same label.
        relevance: bool ``[Q, G]`` or integer ``(query, gallery)`` pairs ``[P, 2]``.
        query_groups, gallery_groups: integer ``[Q]`` / ``[G]``: relevant = same group.
    """

    def __init__(
        self,
        n_q: int,
        n_g: int,
        device: torch.device,
        query_labels: ArrayLike | None,
        gallery_labels: ArrayLike | None,
        relevance: ArrayLike | None,
        query_groups: ArrayLike | None,
        gallery_groups: ArrayLike | None,
    ) -> None:
        sources = [
            name
            for name, pair in (
                ("labels", (query_labels, gallery_labels)),
                ("groups", (query_groups, gallery_groups)),
            )
            if any(p is not None for p in pair)
        ] + (["relevance"] if relevance is not None else [])
        if len(sources) != 1:
            raise ValueError(
                "give exactly one relevance source (labels, groups or relevance); got " + (", ".join(sources) or "none")
            )
        self.n_q, self.n_g, self.device = n_q, n_g, device
        # CSR form: queries look up [lo, hi) in ``self.values`` through ``self.keys``
        self.query_keys: torch.Tensor  # [Q] int64: the key each query looks up
        self.keys: torch.Tensor  # [V] int64 sorted
        self.values: torch.Tensor  # [V] int64 gallery indices
        if sources[0] == "relevance":
            self._from_qrels(as_tensor(relevance, torch.device("cpu")))
        else:
            qk, gk = (query_labels, gallery_labels) if sources[0] == "labels" else (query_groups, gallery_groups)
            if qk is None or gk is None:
                raise ValueError(f"{sources[0]}: both the query and the gallery side are required")
            q_keys = as_tensor(qk, device).reshape(-1)
            g_keys = as_tensor(gk, device).reshape(-1)
            if q_keys.is_floating_point() or g_keys.is_floating_point():
                raise ValueError(f"{sources[0]} must be integer arrays")
            if q_keys.numel() != n_q or g_keys.numel() != n_g:
                raise ValueError(
                    f"{sources[0]} lengths ({q_keys.numel()}, {g_keys.numel()}) do not match the features ({n_q}, {n_g})"
                )
            g_keys = g_keys.long()
            self.values = torch.argsort(g_keys, stable=True)  # gallery indices ascending within a key
            self.keys = g_keys[self.values].contiguous()
            self.query_keys = q_keys.long()

    def _from_qrels(self, rel: torch.Tensor) -> None:
        n_q, n_g = self.n_q, self.n_g
        if rel.dtype == torch.bool:
            if tuple(rel.shape) != (n_q, n_g):
                raise ValueError(f"dense relevance must be [Q, G] = [{n_q}, {n_g}], got {tuple(rel.shape)}")
            pairs = rel.nonzero()  # row-major: sorted by (query, gallery), unique
        elif not rel.is_floating_point() and rel.ndim == 2 and rel.shape[1] == 2:
            pairs = rel.long()
            if pairs.numel() and (
                pairs[:, 0].min() < 0 or pairs[:, 0].max() >= n_q or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= n_g
            ):
                raise ValueError(f"relevance pairs out of range for [Q, G] = [{n_q}, {n_g}]")
            flat = torch.unique(pairs[:, 0] * n_g + pairs[:, 1])  # de-duplicated, sorted
            pairs = torch.stack((flat // n_g, flat % n_g), dim=1)
        else:
            raise ValueError("relevance must be a bool [Q, G] matrix or integer (query, gallery) pairs [P, 2]")
        self.keys = pairs[:, 0].contiguous().to(self.device)
        self.values = pairs[:, 1].contiguous().to(self.device)
        self.query_keys = torch.arange(n_q, device=self.device)

    def lists(self, start: int, stop: int, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevant gallery items of queries ``start:stop`` as a padded matrix.

        Returns:
            ``idx [B, Rmax]`` int64 gallery indices and ``valid [B, Rmax]`` bool.  Padding
            entries (``valid`` False) repeat the row's first entry, so scattering through
            ``idx`` touches only the row's own relevant items (or, in a row without any, one
            arbitrary item).  With ``exclude_self`` query ``i``'s own gallery item ``i`` is
            marked not valid.  ``Rmax >= 1``.
        """
        b = stop - start
        qk = self.query_keys[start:stop].contiguous()
        lo = torch.searchsorted(self.keys, qk)
        hi = torch.searchsorted(self.keys, qk, right=True)
        counts = hi - lo  # [B]
        r_max = max(int(counts.max()), 1) if b else 1
        offs = torch.arange(r_max, device=self.device)
        valid = offs[None, :] < counts[:, None]  # [B, Rmax]
        pos = torch.where(valid, lo[:, None] + offs[None, :], lo[:, None])
        if self.values.numel() == 0:
            return torch.zeros(b, r_max, dtype=torch.long, device=self.device), valid
        idx = self.values[pos.clamp(max=self.values.numel() - 1)]
        if exclude_self:
            own = torch.arange(start, stop, device=self.device)[:, None]
            valid &= idx != own
        return idx, valid


def lists_to_dense(idx: torch.Tensor, valid: torch.Tensor, n_g: int) -> torch.Tensor:
    """Padded relevant lists ``idx, valid [B, R]`` as a dense ``[B, G]`` bool relevance."""
    counts = torch.zeros(idx.shape[0], n_g, dtype=torch.int32, device=idx.device)
    return counts.scatter_add_(1, idx, valid.int()) > 0
