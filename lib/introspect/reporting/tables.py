"""Result tables: mean +- SE per (group, row) and metric, with the paper's bold for "not worse than the best".

Input is a long polars DataFrame of per-item scores, one row per scored item and metric::

    group   row                 item_id  metric   value
    Qwen3   Qwen3               17       exact    1.0      (group: e.g. the target model; optional)
    Qwen3   Qwen3 - activation  17       exact    0.0      (row: e.g. the explainer or variant)

``build_metric_table`` gives one row per (group, row), in order of first appearance, with ``n`` (items of
that row) and, for each metric, ``{metric}_mean``, ``{metric}_se`` and ``{metric}_best``:

- a per-item metric: mean and SE (``mean_se``) of its values times ``scale``; best by ``paired_best``
  among the rows of the group, paired on ``item_id``;
- an aggregate metric (one whose per-item value is undefined, e.g. has-changed F1): its mean and SE are
  read from ``aggregates`` as given (display units, ``scale`` not applied); best = the row with the
  highest aggregate mean plus every row whose paired t-test against it on the per-item *proxy* metric
  named in ``proxies`` (e.g. ``changed_correct``) gives p >= alpha.

Every row of a group must be scored on the same item ids for each metric used in a test; a row with
missing or extra items, duplicate items or no values for a metric raises ValueError naming the rows.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from introspect.reporting.statistics import mean_se, paired_best, unpaired_best

log = logging.getLogger(__name__)


GROUP, ROW, ITEM, METRIC, VALUE = "group", "row", "item_id", "metric", "value"


MEAN, SE = "mean", "se"


CSV_FLOAT_DECIMALS = 6


def format_cell(mean: float, se: float, scale: float = 1.0, digits: int = 1) -> str:
    """One table cell as the paper prints it, e.g. '64.0 ± 0.4'."""
    return f"{mean * scale:.{digits}f} ± {se * scale:.{digits}f}"


def long_scores(
    per_item: Mapping[str, Sequence[float] | np.ndarray],
    row: str,
    item_ids: Sequence[object],
    group: str | None = None,
) -> pl.DataFrame:
    """Per-item arrays of one (group, row), e.g. ``score_causal``'s, as long rows for ``build_metric_table``."""
    n = len(item_ids)
    frames = []
    for metric, values in per_item.items():
        values = np.asarray(values, dtype=float)
        if values.shape != (n,):
            raise ValueError(f"metric {metric!r} has {values.shape[0]} values for {n} item ids")
        columns = {ROW: [row] * n, ITEM: list(item_ids), METRIC: [metric] * n, VALUE: values}
        if group is not None:
            columns = {GROUP: [group] * n, **columns}
        frames.append(pl.DataFrame(columns))
    return pl.concat(frames)


def _groups(df: pl.DataFrame, has_group: bool) -> list[tuple[str | None, list[str]]]:
    """(group, rows) in order of first appearance."""
    keys = [GROUP, ROW] if has_group else [ROW]
    pairs = df.select(keys).unique(maintain_order=True)
    out: dict[str | None, list[str]] = {}
    for rec in pairs.iter_rows(named=True):
        out.setdefault(rec.get(GROUP), []).append(rec[ROW])
    return list(out.items())


def _per_item(part: pl.DataFrame, group: str | None, rows: list[str], metric: str,
              aligned: bool = True) -> dict[str, np.ndarray]:
    """One metric's values per row, aligned on item_id; raises if the rows are not scored on the same items
    (unless `aligned` is False: rows scored on different items, for an unpaired test)."""
    where = f"group {group!r}, " if group is not None else ""
    sub = part.filter(pl.col(METRIC) == metric)
    dup = sub.group_by([ROW, ITEM]).len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(
            f"{where}metric {metric!r}: duplicate item ids for rows {sorted(set(dup[ROW].to_list()))}"
        )
    items = {r: sub.filter(pl.col(ROW) == r).sort(ITEM) for r in rows}
    empty = [r for r, d in items.items() if d.height == 0]
    if empty:
        raise ValueError(f"{where}metric {metric!r}: no values for rows {empty}")
    if not aligned:
        return {r: d[VALUE].to_numpy().astype(float) for r, d in items.items()}
    ids = {r: d[ITEM].to_list() for r, d in items.items()}
    union = set().union(*map(set, ids.values()))
    gaps = {r: sorted(union - set(v), key=str) for r, v in ids.items() if len(v) != len(union)}
    if gaps:
        detail = ", ".join(
            f"{r!r} lacks {len(k)} of {len(union)} (e.g. item {k[0]!r})" for r, k in gaps.items()
        )
        raise ValueError(f"{where}metric {metric!r}: rows are not scored on the same items ({detail})")
    return {r: d[VALUE].to_numpy().astype(float) for r, d in items.items()}


def _aggregate(
    aggregates: pl.DataFrame, group: str | None, row: str, metric: str, has_group: bool
) -> tuple[float, float]:
    """The caller-given (mean, se) of an aggregate metric for one row; exactly one entry must exist."""
    cond = (pl.col(ROW) == row) & (pl.col(METRIC) == metric)
    if has_group:
        cond = cond & (pl.col(GROUP) == group)
    hit = aggregates.filter(cond)
    if hit.height != 1:
        where = f"group {group!r}, " if has_group else ""
        raise ValueError(
            f"aggregates: expected one entry for {where}row {row!r}, metric {metric!r}; found {hit.height}"
        )
    return float(hit[MEAN][0]), float(hit[SE][0])


def build_metric_table(
    scores: pl.DataFrame,
    metrics: Sequence[str],
    *,
    aggregates: pl.DataFrame | None = None,
    proxies: Mapping[str, str] | None = None,
    scale: float = 1.0,
    alpha: float = 0.05,
    paired: bool = True,
) -> pl.DataFrame:
    """Mean, SE and paper-style best flag per (group, row) and metric, from long per-item scores.

    ``scores`` has columns row, item_id, metric, value and optionally group. A metric listed in
    ``proxies`` is an aggregate metric: ``aggregates`` (columns [group], row, metric, mean, se) gives
    its mean and SE, and its best flag comes from the paired test on the proxy per-item metric.
    """
    proxies = dict(proxies or {})
    has_group = GROUP in scores.columns
    needed = {ROW, ITEM, METRIC, VALUE}
    if missing := needed - set(scores.columns):
        raise ValueError(f"scores lacks columns {sorted(missing)}")
    if proxies and aggregates is None:
        raise ValueError(f"metrics {sorted(proxies)} need their aggregate values in `aggregates`")
    if aggregates is not None:
        agg_needed = {ROW, METRIC, MEAN, SE} | ({GROUP} if has_group else set())
        if missing := agg_needed - set(aggregates.columns):
            raise ValueError(f"aggregates lacks columns {sorted(missing)}")
    known = set(scores[METRIC].unique().to_list())
    for metric in metrics:
        source = proxies.get(metric, metric)
        if source not in known:
            raise ValueError(f"metric {source!r} has no per-item scores; scores hold {sorted(known)}")

    test = paired_best if paired else unpaired_best
    records: list[dict[str, object]] = []
    for group, rows in _groups(scores, has_group):
        part = scores.filter(pl.col(GROUP) == group) if has_group else scores
        counts = part.group_by(ROW).agg(pl.col(ITEM).n_unique().alias("n"))
        n_of = dict(zip(counts[ROW].to_list(), counts["n"].to_list()))
        table = {r: ({GROUP: group} if has_group else {}) | {ROW: r, "n": n_of[r]} for r in rows}
        for metric in metrics:
            if metric in proxies:
                values = _per_item(part, group, rows, proxies[metric], aligned=paired)
                stats = {r: _aggregate(aggregates, group, r, metric, has_group) for r in rows}
                reference = max(rows, key=lambda r: stats[r][0])
                best = test(values, alpha=alpha, reference=reference)
            else:
                values = _per_item(part, group, rows, metric, aligned=paired)
                stats = {r: tuple(x * scale for x in mean_se(v)) for r, v in values.items()}
                best = test(values, alpha=alpha)
            for r in rows:
                table[r][f"{metric}_mean"], table[r][f"{metric}_se"] = stats[r]
                table[r][f"{metric}_best"] = r in best
        records.extend(table.values())
    columns = ([GROUP] if has_group else []) + [ROW, "n"]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "se", "best")]
    schema = {c: pl.Float64 for c in columns if c.endswith(("_mean", "_se"))}
    schema |= {c: pl.Boolean for c in columns if c.endswith("_best")}
    schema |= {ROW: pl.String, "n": pl.Int64} | ({GROUP: pl.String} if has_group else {})
    return pl.DataFrame(records, schema={c: schema[c] for c in columns})


def table_metrics(table: pl.DataFrame) -> list[str]:
    """Metric stems of a built table: every X with X_mean, X_se and X_best columns, in column order."""
    cols = set(table.columns)
    return [
        c[: -len("_mean")]
        for c in table.columns
        if c.endswith("_mean") and {c[:-5] + "_se", c[:-5] + "_best"} <= cols
    ]


def _plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:g}"
    return str(value)


def table_cells(
    table: pl.DataFrame,
    labels: Mapping[str, str] | None = None,
    scale: float = 1.0,
    digits: int = 1,
) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and rows of (text, bold) cells: one 'mean ± se' cell per metric, bold where best; other columns
    as they are. Consecutive repeats of the group label are left blank, as in the paper's tables."""
    labels = dict(labels or {})
    metrics = table_metrics(table)
    parts = {f"{m}_{s}" for m in metrics for s in ("mean", "se", "best")}
    columns: list[tuple[str, str | None]] = []  # (header, metric or plain column)
    for c in table.columns:
        if c in parts:
            if c.endswith("_mean"):
                m = c[:-5]
                columns.append((labels.get(m, m), m))
        else:
            columns.append((labels.get(c, c), None))
    rows = []
    previous_group: object = object()
    cols = [c for c in table.columns if c not in parts]
    for rec in table.iter_rows(named=True):
        cells = []
        plain = iter(cols)
        for _, metric in columns:
            if metric is None:
                col = next(plain)
                value = rec[col]
                if col == GROUP:
                    text = "" if value == previous_group else _plain(value)
                    previous_group = value
                else:
                    text = _plain(value)
                cells.append((text, False))
            elif rec[f"{metric}_mean"] is None:  # a row not scored on this metric (e.g. gold labels on ACT)
                cells.append(("—", False))
            else:
                cell = format_cell(rec[f"{metric}_mean"], rec[f"{metric}_se"], scale=scale, digits=digits)
                cells.append((cell, bool(rec[f"{metric}_best"])))
        rows.append(cells)
    return [h for h, _ in columns], rows


def to_markdown(
    table: pl.DataFrame,
    labels: Mapping[str, str] | None = None,
    scale: float = 1.0,
    digits: int = 1,
) -> str:
    """Markdown rendering of :func:`table_cells` (bold as ``**...**``; a ``|`` in a cell escaped)."""
    headers, rows = table_cells(table, labels, scale, digits)

    def md(text: str, bold: bool = False) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold else text

    lines = ["| " + " | ".join(md(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(md(text, bold) for text, bold in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_html(
    table: pl.DataFrame,
    title: str,
    notes: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    scale: float = 1.0,
    digits: int = 1,
) -> str:
    """A standalone HTML page of :func:`table_cells`: what ``snakemake --report`` shows inline for each table
    (a CSV would only be a download link)."""
    headers, rows = table_cells(table, labels, scale, digits)

    def cell(text: str, bold: bool, tag: str = "td") -> str:
        text = html.escape(text, quote=False)
        return f"<{tag}>{'<b>' + text + '</b>' if bold else text}</{tag}>"

    head = "".join(cell(h, False, "th") for h in headers)
    body = "\n".join("<tr>" + "".join(cell(text, bold) for text, bold in row) + "</tr>" for row in rows)
    items = "".join(f"<li>{html.escape(n, quote=False)}</li>" for n in notes)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#eee}</style></head>\n"
            f"<body><h2>{html.escape(title)}</h2>\n<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>"
            f"</table>\n<ul>{items}</ul></body></html>\n")


def write_table(
    df: pl.DataFrame,
    csv_path: str | Path,
    md_path: str | Path,
    title: str,
    notes: str | Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    scale: float = 1.0,
    digits: int = 1,
) -> None:
    """Write a built table as CSV (columns as in ``df``, floats with 6 decimals), as titled Markdown and, beside
    the Markdown, as an HTML page for the report."""
    csv_path, md_path = Path(csv_path), Path(md_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    df.write_csv(csv_path, float_precision=CSV_FLOAT_DECIMALS, null_value="")
    notes = [notes] if isinstance(notes, str) else list(notes)
    text = f"# {title}\n\n" + to_markdown(df, labels=labels, scale=scale, digits=digits)
    if notes:
        text += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    md_path.write_text(text, encoding="utf-8")
    html_path = md_path.with_suffix(".html")
    html_path.write_text(to_html(df, title, notes, labels=labels, scale=scale, digits=digits), encoding="utf-8")
    log.info("wrote %s, %s and %s (%d rows)", csv_path, md_path, html_path, df.height)
