"""What every report shares: skill metrics, confidence intervals, atomic report folders.

A report is built in a hidden temporary folder beside its destination and swapped in with
``os.replace``: readers see the old report or the new one, never a half-written mix, and an
interrupted report leaves the old one in place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPORTS_DIR = Path("reports")


def skill(obs: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R² (coefficient of determination, as the CV objective), MSE, RMSE, bias, NSE, r.

    NSE = 1 - SSE / SS(obs - mean(obs)) is numerically the same as this R²; both are given
    because hydrology and flux papers report them under these names. ``r`` is Pearson's r.
    """
    obs = np.asarray(obs, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    err = pred - obs
    mse = float(np.mean(err**2))
    sst = float(np.sum((obs - obs.mean()) ** 2))
    nse = 1.0 - float(np.sum(err**2)) / sst if sst > 0 else float("nan")
    r = float(np.corrcoef(obs, pred)[0, 1]) if len(obs) > 1 and np.std(pred) > 0 else float("nan")
    return {"r2": nse, "mse": mse, "rmse": math.sqrt(mse), "bias": float(err.mean()),
            "nse": nse, "r": r, "n": int(len(obs))}


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def days_per_month(days: np.ndarray) -> dict[str, int]:
    """Target days per calendar month (reports say which days a score stands on)."""
    d = np.asarray(days).astype("datetime64[M]").astype(np.int64) % 12
    counts = np.bincount(d, minlength=12)
    return {m: int(c) for m, c in zip(MONTHS, counts, strict=True)}


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval (degenerate for one value)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


@contextmanager
def report_folder(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``dest`` atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def html_page(title: str, sections: list[tuple[str, str]], figures: list[Any]) -> str:
    """A self-contained page: text sections then plotly figures (plotly.js inlined once)."""
    import html

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em "
             "auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    return "\n".join(parts)


def md_table(rows: list[dict[str, Any]], cols: list[str], fmt: str = "{:.4f}") -> str:
    def cell(v: Any) -> str:
        return fmt.format(v) if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def html_table(rows: list[dict[str, Any]], cols: list[str], fmt: str = "{:.4f}") -> str:
    import html

    def cell(v: Any) -> str:
        return html.escape(fmt.format(v) if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
