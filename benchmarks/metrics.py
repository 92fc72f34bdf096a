"""Benchmark of crossgap's retrieval metrics (a script: prints a table, asserts nothing).

Compares, on random L2-normalised features (D=512, 100 classes):

* ``crossgap``: :func:`crossgap.metrics.evaluate_retrieval` (chunked; relevant items' ranks by a
  batched ``searchsorted`` instead of a sort; all metrics, similarity matmul included);
* ``tm loop``: the per-query loop of the paper's reference implementation — torchmetrics'
  ``retrieval_average_precision`` and ``retrieval_r_precision`` query by query plus a top-R
  loop for mAP@R (timed on at most ``--tm-queries`` queries, extrapolated linearly);
* ``sort``: one bare full ``torch.sort`` of the precomputed similarity matrix (the floor
  of any full-ranking mAP); ``mm+sort`` adds the similarity matmul that every method pays.

``|dmAP| vs tm`` checks agreement with torchmetrics' AP on 100 queries (see :func:`agreement`).

Then the peak memory of a chunked large run (RSS high-water in a subprocess on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) against the chunk's theoretical bound.

Run: ``python benchmarks/metrics.py`` (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from crossgap.metrics import evaluate_retrieval

warnings.filterwarnings("ignore", category=FutureWarning)
from torchmetrics.functional.retrieval import retrieval_average_precision, retrieval_r_precision  # noqa: E402

BYTES_PER_ELEMENT = 4 + 4  # sim fp32 + int32 buckets


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def problem(n_q: int, n_g: int, dim: int, n_classes: int, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n_q, dim, generator=gen), dim=1).to(device)
    g = F.normalize(torch.randn(n_g, dim, generator=gen), dim=1).to(device)
    ql = torch.randint(0, n_classes, (n_q,), generator=gen).to(device)
    gl = torch.randint(0, n_classes, (n_g,), generator=gen).to(device)
    return q, g, ql, gl


def timed(fn, device: torch.device, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls (the machine is shared: the minimum is the least noisy)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def rss_bytes(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (high-water) of this process in bytes.

    Read from /proc rather than ``getrusage``: ``ru_maxrss`` survives fork+exec, so a child
    would report the parent's high-water mark.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def torchmetrics_loop(q, g, ql, gl, n_loop: int) -> dict[str, float]:
    """The per-query loop over the first ``n_loop`` queries (AP, R-precision, AP@R, R@k)."""
    sim = q[:n_loop] @ g.T
    rel = ql[:n_loop, None] == gl[None, :]
    aps, rps, aprs, r1 = [], [], [], []
    for i in range(n_loop):
        aps.append(retrieval_average_precision(sim[i], rel[i]))
        rps.append(retrieval_r_precision(sim[i], rel[i]))
        n_rel = int(rel[i].sum())
        hits = rel[i][sim[i].topk(n_rel).indices].float()
        prec = hits.cumsum(0) / torch.arange(1, n_rel + 1, device=hits.device)
        aprs.append((prec * hits).sum() / n_rel)
        r1.append(rel[i][sim[i].topk(10).indices].any())
    return {"mAP": float(torch.stack(aps).mean() * 100), "R_precision": float(torch.stack(rps).mean() * 100)}


def agreement(q, g, ql, gl, n: int = 100) -> float:
    """Max |AP| difference to torchmetrics on ``n`` queries, scores shifted positive.

    torchmetrics (1.9) drops relevant items with score <= 0 from AP, so it is fed
    ``sim + 2`` (same ranking, all positive) for this check only.
    """
    ours = evaluate_retrieval(q[:n], g, ql[:n], gl, device=q.device)
    sim = q[:n] @ g.T + 2
    rel = ql[:n, None] == gl[None, :]
    theirs = torch.stack([retrieval_average_precision(sim[i], rel[i]) for i in range(n)]).double().mean() * 100
    return abs(ours["mAP"] - float(theirs))


def speed_table(device: torch.device, tm_queries: int) -> None:
    print(f"\n== speed on {device} (torch threads: {torch.get_num_threads()}) ==")
    header = (
        f"{'problem':>12} | {'crossgap s':>10} | {'tm loop s':>10} | {'sort s':>8} | {'mm+sort s':>9} | "
        f"{'loop/crossgap':>13} | {'crossgap/sort':>13} | {'crossgap/(mm+sort)':>18} | {'|dmAP| vs tm':>12}"
    )
    print(header)
    print("-" * len(header))
    for n_q in (1000, 5000):
        n_g = 20000
        q, g, ql, gl = problem(n_q, n_g, 512, 100, device)
        evaluate_retrieval(q[:64], g, ql[:64], gl, device=device)  # warm-up
        sim = q @ g.T
        t_ours = t_sort = t_mm_sort = float("inf")
        for _ in range(2):  # interleaved so that load changes on the shared machine hit all alike
            t_ours = min(t_ours, timed(lambda: evaluate_retrieval(q, g, ql, gl, device=device), device)[0])
            t_sort = min(t_sort, timed(lambda: torch.sort(sim, dim=1, descending=True), device)[0])
            t_mm_sort = min(t_mm_sort, timed(lambda: torch.sort(q @ g.T, dim=1, descending=True), device)[0])
        del sim
        n_loop = min(n_q, tm_queries)
        t_loop, _ = timed(lambda: torchmetrics_loop(q, g, ql, gl, n_loop), device)
        t_loop *= n_q / n_loop
        diff = agreement(q, g, ql, gl)
        note = "" if n_loop == n_q else f"  (tm loop extrapolated from {n_loop} queries)"
        print(
            f"{n_q // 1000}k x {n_g // 1000}k".rjust(12)
            + f" | {t_ours:10.2f} | {t_loop:10.2f} | {t_sort:8.2f} | {t_mm_sort:9.2f} | {t_loop / t_ours:12.1f}x"
            + f" | {t_ours / t_sort:12.2f}x | {t_ours / t_mm_sort:17.2f}x | {diff:12.2e}{note}"
        )


def memory_child(n_q: int, n_g: int, dim: int, chunk: int, device_name: str) -> None:
    """Run in a subprocess: one chunked evaluation, report peak memory as JSON on stdout."""
    device = torch.device(device_name)
    q, g, ql, gl = problem(n_q, n_g, dim, 1000, device)
    base = rss_bytes("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t, out = timed(lambda: evaluate_retrieval(q, g, ql, gl, chunk_size=chunk, device=device), device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = rss_bytes("VmHWM")
    print(json.dumps({"base": base, "peak": peak, "seconds": t, "mAP": out["mAP"]}))


def memory_row(n_q: int, n_g: int, dim: int, chunk: int, device: torch.device) -> None:
    cmd = [sys.executable, __file__, "--memory-child", f"{n_q},{n_g},{dim},{chunk},{device}"]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    bound = chunk * n_g * BYTES_PER_ELEMENT
    kind = "CUDA allocated" if device.type == "cuda" else "RSS high-water (VmHWM)"
    print(
        f"{n_q} x {n_g}, D={dim}, chunk={chunk} on {device}: {res['seconds']:.1f} s, "
        f"peak {kind} {res['peak'] / 2**30:.2f} GiB (baseline {res['base'] / 2**30:.2f} GiB, "
        f"delta {(res['peak'] - res['base']) / 2**30:.2f} GiB); chunk bound {BYTES_PER_ELEMENT} B x chunk x G "
        f"= {bound / 2**30:.2f} GiB + features"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tm-queries", type=int, default=400, help="queries timed in the torchmetrics loop")
    parser.add_argument("--cpu-memory-queries", type=int, default=20_000, help="queries of the CPU memory run")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        n_q, n_g, dim, chunk, dev = args.memory_child.split(",")
        memory_child(int(n_q), int(n_g), int(dim), int(chunk), dev)
        return
    cpu = torch.device("cpu")
    speed_table(cpu, args.tm_queries)
    print("\n== peak memory of a chunked large run ==")
    memory_row(args.cpu_memory_queries, 200_000, 64, 1024, cpu)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        speed_table(cuda, 5000)
        memory_row(20_000, 200_000, 64, 1024, cuda)


if __name__ == "__main__":
    main()
