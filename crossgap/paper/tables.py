"""Paper-style tables: datasets down (grouped as in the paper), models across, native beside each method.

:func:`paper_frame` is the long form (``paper_tables.csv``): one row per task × row (dataset or
average) × model × method, with the native score, the method's, Δ and its interval (a dataset: the
paired interval of ``summary.json``; an average: the two-level interval of the verdicts), how many
datasets entered an average, and the published figures beside it (:mod:`crossgap.paper.published`).
:func:`paper_markdown` lays it out as the paper does (``paper_tables.md``), with the verdicts.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import pandas as pd

from crossgap.comparison import _order, _scores
from crossgap.methods import get_method, native_method
from crossgap.paper.groups import DEFAULT_KINDS, averages_for, groups_for, paper_metric
from crossgap.paper.published import SOURCES, Published

log = logging.getLogger(__name__)

TASKS = ("image_retrieval", "text_retrieval", "zero_shot")
TASK_TITLES = {"image_retrieval": "Image→image retrieval", "text_retrieval": "Text→text retrieval",
               "zero_shot": "Zero-shot classification"}
#: the paper grid's model order (params/paper.yaml); other models follow, sorted
MODEL_ORDER = ("clip_b32", "clip_l14", "openclip_b32", "openclip_l14", "siglip_b16", "slip_b16", "slip_l16")
FRAME_COLUMNS = ["task", "group", "row", "name", "model", "metric", "method", "native", "score", "delta", "ci95_low",
                 "ci95_high", "significant", "n", "of", "unavailable", "published_native", "published",
                 "native_minus_published", "score_minus_published", "published_source", "published_protocol",
                 "protocol"]


def model_order(models: Sequence[str]) -> list[str]:
    """``models`` in the paper grid's order, the others after them sorted."""
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(set(models) - set(known))


def chosen_methods(summary: Mapping[str, Any], task: str, methods: Sequence[str] | None = None,
                   unavailable: Mapping[tuple[str, str, str, str], str] | None = None) -> list[str]:
    """The non-native methods of ``task`` a table shows: ``methods`` (the report setting) when given, in
    that order, else every inverted and training-free method of the run (not snapshots), in table order."""
    if methods is not None:
        return [m for m in methods if m != native_method(task).name]
    present = {name for models in summary.values() for tasks in models.values()
               for name in tasks.get(task, {})} | {k[3] for k in (unavailable or {}) if k[2] == task}
    return sorted((m for m in present if get_method(task, m).kind in DEFAULT_KINDS), key=lambda m: _order(task, m))


def task_datasets(summary: Mapping[str, Any], task: str) -> list[str]:
    """Datasets of the run with a native result on ``task``."""
    return sorted(d for d, models in summary.items()
                  if any(native_method(task).name in tasks.get(task, {}) for tasks in models.values()))


def _published_cols(published: Mapping[tuple, Published], task: str, scope: str, name: str, model: str,
                    method: str, native: float | None, score: float | None, comparable: str | None,
                    metric: str) -> dict[str, Any]:
    base = native_method(task).name
    p_native = published.get((task, scope, name, model, base))
    p_score = published.get((task, scope, name, model, method))
    if p_native is None and p_score is None:
        return {}
    figure = p_score or p_native
    notes = [figure.note]
    if figure.metric not in ("paper", metric):
        comparable = comparable or f"published metric {figure.metric}, run metric {metric}"
    if comparable:
        notes.insert(0, f"not compared: {comparable}")
    ok = comparable is None

    def diff(run: float | None, pub: Published | None) -> float | None:
        return None if not ok or run is None or pub is None else run - pub.value

    return {"published_native": None if p_native is None else p_native.value,
            "published": None if p_score is None else p_score.value,
            "native_minus_published": diff(native, p_native), "score_minus_published": diff(score, p_score),
            "published_source": figure.source, "published_protocol": figure.protocol, "protocol": "; ".join(notes)}


def paper_frame(summary: Mapping[str, Any], verdicts: pd.DataFrame, published: Mapping[tuple, Published], *,
                methods: Mapping[str, Sequence[str]] | None = None,
                unavailable: Mapping[tuple[str, str, str, str], str] | None = None,
                protocol_notes: Mapping[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """The long paper table (columns :data:`FRAME_COLUMNS`).

    ``verdicts``: :func:`crossgap.paper.verdicts.verdict_rows` (the averages' intervals); ``methods``:
    task → methods shown (default :func:`chosen_methods`); ``unavailable``: as
    :func:`crossgap.comparison.comparison_table`; ``protocol_notes``: ``{(task, dataset): note}`` of runs
    whose protocol differs from the published one (e.g. truncated texts): such rows are not compared.
    """
    unavailable = unavailable or {}
    protocol_notes = protocol_notes or {}
    vindex = {(r.task, r.average, r.model, r.method, r.versus): r for r in verdicts.itertuples()}
    rows: list[dict[str, Any]] = []
    for task in TASKS:
        datasets = task_datasets(summary, task)
        shown = chosen_methods(summary, task, (methods or {}).get(task), unavailable)
        if not datasets or not shown:
            continue
        base = native_method(task).name
        models = model_order(sorted({m for d in datasets for m, t in summary[d].items() if base in t.get(task, {})}))
        cells: dict[tuple[str, str, str], dict[str, Any]] = {}
        for group in groups_for(task, datasets):
            for dataset in group.datasets:
                for model in models:
                    node = summary.get(dataset, {}).get(model, {}).get(task, {})
                    if base not in node:
                        continue
                    metric = paper_metric(task, dataset, node[base])
                    native = node[base].get(metric)
                    for method in shown:
                        reason = unavailable.get((dataset, model, task, method))
                        m_node = node.get(method, {})
                        if method not in node and reason is None:
                            continue
                        score = _scores(m_node).get(metric)
                        low, high = m_node.get("ci95_low", {}).get(metric), m_node.get("ci95_high", {}).get(metric)
                        row = {"task": task, "group": group.key, "row": "dataset", "name": dataset, "model": model,
                               "metric": metric, "method": method, "native": native, "score": score,
                               "delta": None if score is None or native is None else score - native,
                               "ci95_low": low, "ci95_high": high,
                               "significant": None if low is None else bool(low > 0 or high < 0),
                               "n": None, "of": None, "unavailable": reason}
                        row |= _published_cols(published, task, "dataset", dataset, model, method, native, score,
                                               protocol_notes.get((task, dataset)), metric)
                        rows.append(row)
                        cells[(dataset, model, method)] = row
        for average in averages_for(task, datasets):
            for model in models:
                for method in shown:
                    entered = [cells[(d, model, method)] for d in average.datasets if (d, model, method) in cells]
                    natives = [c["native"] for c in entered if c["native"] is not None]
                    pairs = [c for c in entered if c["native"] is not None and c["score"] is not None]
                    if not natives:
                        continue
                    native = sum(natives) / len(natives)
                    score = sum(c["score"] for c in pairs) / len(pairs) if pairs else None
                    v = vindex.get((task, average.key, model, method, base))
                    n, of = len(pairs), len(average.datasets)
                    notes = sorted({protocol_notes[(task, c["name"])] for c in entered
                                    if (task, c["name"]) in protocol_notes})
                    comparable = (f"{n} of {of} datasets" if n < of else None) or (
                        f"protocol differs on some datasets ({'; '.join(notes)})" if notes else None)
                    row = {"task": task, "group": "average", "row": "average", "name": average.key, "model": model,
                           "metric": "/".join(sorted({c["metric"] for c in entered})), "method": method,
                           "native": native, "score": score,
                           "delta": None if not pairs else sum(c["score"] - c["native"] for c in pairs) / len(pairs),
                           "ci95_low": None if v is None else v.ci95_low, "ci95_high": None if v is None else v.ci95_high,
                           "significant": None if v is None else bool(v.significant), "n": n, "of": of,
                           "unavailable": None}
                    row |= _published_cols(published, task, "average", average.key, model, method, native, score,
                                           comparable, "paper")
                    rows.append(row)
    return pd.DataFrame(rows, columns=FRAME_COLUMNS)


def _fmt(x: Any, signed: bool = False) -> str:
    if x is None or pd.isna(x):
        return ""
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _cell(row: Mapping[str, Any] | None, which: str) -> str:
    """One Markdown cell: the native score or ``score (Δ*)``, then ``pub x.x`` (``†``: not compared)."""
    if row is None:
        return ""
    if which != "native" and isinstance(row.get("unavailable"), str):
        return "unavailable"
    value = row["native"] if which == "native" else row["score"]
    text = _fmt(value)
    if which != "native" and row["delta"] is not None and not pd.isna(row["delta"]):
        text += f" ({_fmt(row['delta'], True)}{'*' if row['significant'] is True else ''})"
    pub = row.get("published_native" if which == "native" else "published")
    if pub is not None and not pd.isna(pub):
        compared = row.get("native_minus_published" if which == "native" else "score_minus_published")
        mark = "‡" if row.get("published_protocol") == "not stated" else ""
        text += f" · pub {pub:.1f}{mark}" + ("†" if compared is None or pd.isna(compared) else f" ({compared:+.1f})")
    return text.strip()


def task_grid(frame: pd.DataFrame, task: str, titles: Mapping[str, str]) -> list[tuple[str, list[str], list[tuple[str, list[str]]]]]:
    """The paper-style tables of one task, one per method: ``(method, header, rows)`` with rows
    ``(kind, cells)``, kind ``group`` (a group's title row), ``dataset`` or ``average``."""
    part = frame[frame["task"] == task]
    if part.empty:
        return []
    models = model_order(sorted(part["model"].unique()))
    records = {(r["name"], r["row"], r["model"], r["method"]): r for r in part.to_dict("records")}
    tables = []
    for method in dict.fromkeys(part["method"]):
        header = ["dataset", "metric"] + [f"{m} {w}" for m in models for w in ("native", method)]
        rows: list[tuple[str, list[str]]] = []
        sel = part[part["method"] == method]
        current = None
        for group, kind, name in dict.fromkeys(zip(sel["group"], sel["row"], sel["name"])):
            if group != current and kind == "dataset":
                rows.append(("group", [titles.get(f"group:{group}", group)] + [""] * (1 + 2 * len(models))))
                current = group
            cells = [records.get((name, kind, m, method)) for m in models]
            metric = next((c["metric"] for c in cells if c is not None), "")
            label = name if kind == "dataset" else f"{titles.get(f'average:{name}', name)} (n = " + "/".join(
                sorted({f"{int(c['n'])} of {int(c['of'])}" for c in cells if c is not None})) + ")"
            rows.append((kind, [label, metric] + [x for c in cells for x in (_cell(c, "native"), _cell(c, method))]))
        tables.append((method, header, rows))
    return tables


def task_markdown(frame: pd.DataFrame, task: str, titles: Mapping[str, str]) -> list[str]:
    """The paper-style tables of one task (one per method), as Markdown lines."""
    lines = []
    for method, header, rows in task_grid(frame, task, titles):
        lines += ["", f"### {TASK_TITLES[task]}: {method} vs native", "", "| " + " | ".join(header) + " |",
                  "|---|---|" + "---:|" * (len(header) - 2)]
        for kind, cells in rows:
            if kind == "group":
                cells = [f"*{cells[0]}*"] + cells[1:]
            elif kind == "average":
                cells = [f"**{cells[0]}**"] + cells[1:]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def verdict_markdown(verdicts: pd.DataFrame, task: str, titles: Mapping[str, str]) -> list[str]:
    """The verdict table of one task: method vs native, then the pairs of methods."""
    part = verdicts[verdicts["task"] == task]
    if part.empty:
        return []
    lines = ["", f"### {TASK_TITLES[task]}: verdicts across datasets", "",
             "Datasets where the method's 95% paired interval lies above 0 / contains 0 / lies below 0, and "
             "the mean Δ over the datasets with its two-level bootstrap interval (datasets, then queries).", "",
             "| average | model | method | vs | datasets | better / same / worse | mean Δ | 95% CI |",
             "|---|---|---|---|---:|---|---:|---|"]
    for r in part.itertuples():
        star = "*" if r.significant else ""
        lines.append(f"| {titles.get(f'average:{r.average}', r.average)} | {r.model} | {r.method} | {r.versus} | {r.datasets} of "
                     f"{r.of} | {r.better} / {r.same} / {r.worse} | {r.mean_delta:+.2f}{star} | "
                     f"[{r.ci95_low:+.2f}, {r.ci95_high:+.2f}] |")
    return lines


def paper_markdown(frame: pd.DataFrame, verdicts: pd.DataFrame, titles: Mapping[str, str], notes: Sequence[str]) -> str:
    """``paper_tables.md``: per task the paper-style tables, then the verdicts; the sources; the notes."""
    lines = ["# crossgap: paper tables", "",
             "Cells: native score; method score (Δ vs native, `*`: the 95% interval excludes 0). `pub x.x`: the "
             "published figure (difference run − published), `‡`: the source does not state its protocol (e.g. "
             "which ROxford/RParis setup; crossgap's Medium is compared), `†`: shown but not compared (protocol "
             "differs or an incomplete average; see paper_tables.csv, column protocol). Empty: not in this run."]
    for task in TASKS:
        body = task_markdown(frame, task, titles) + verdict_markdown(verdicts, task, titles)
        if body:
            lines += ["", f"## {TASK_TITLES[task]}"] + body
    used = sorted(set(frame["published_source"].dropna()))
    if used:
        lines += ["", "## Sources of the published figures", ""]
        lines += [f"- [{s}] {SOURCES[s].citation} ({SOURCES[s].location}); checked: {SOURCES[s].checked}" for s in used]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def paper_summary(frame: pd.DataFrame, verdicts: pd.DataFrame) -> dict[str, Any]:
    """``paper_summary.json`` (DVC metrics): ``task → average → model → method → {native, score, delta,
    ci95_low, ci95_high, n, of, better, same, worse}``, and under ``pairs`` the same for each pair of
    methods (key ``a_vs_b``); ``comparisons``: the counts the multiple-comparison note states (numbers
    only, so ``dvc metrics diff`` shows every entry)."""
    out: dict[str, Any] = {}
    vindex = {(r.task, r.average, r.model, r.method, r.versus): r for r in verdicts.itertuples()}
    for r in frame[frame["row"] == "average"].itertuples():
        node = out.setdefault(r.task, {}).setdefault(r.name, {}).setdefault(r.model, {}).setdefault(r.method, {})
        for key in ("native", "score", "delta", "ci95_low", "ci95_high"):
            value = getattr(r, key)
            if value is not None and not pd.isna(value):
                node[key] = round(float(value), 6)
        node["n"], node["of"] = int(r.n), int(r.of)
        v = vindex.get((r.task, r.name, r.model, r.method, native_method(r.task).name))
        if v is not None:
            node |= {"better": int(v.better), "same": int(v.same), "worse": int(v.worse)}
    for r in verdicts.itertuples():
        if r.versus == native_method(r.task).name:
            continue
        node = out.setdefault(r.task, {}).setdefault(r.average, {}).setdefault(r.model, {}).setdefault("pairs", {})
        node[f"{r.method}_vs_{r.versus}"] = {
            "delta": round(float(r.mean_delta), 6), "ci95_low": round(float(r.ci95_low), 6),
            "ci95_high": round(float(r.ci95_high), 6), "n": int(r.datasets), "better": int(r.better),
            "same": int(r.same), "worse": int(r.worse)}
    out["comparisons"] = {"per_dataset": int(verdicts["datasets"].sum()) if not verdicts.empty else 0,
                          "means": int(len(verdicts))}
    return out
