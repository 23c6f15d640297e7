"""What every report shares: skill metrics, confidence intervals, safe atomic report folders.

Layout: ``<out>/<study>/<kind>/`` for each kind of report (``final``, ``variables``,
``memory``), and ``<out>/<study>/index.html``, a page that links to the kinds present. A report
owns only its ``<kind>/`` folder: it is built in a hidden temporary sibling and swapped in with
``os.replace``, so readers see the old report or the new one, never a half-written mix; an
interrupted report leaves the old one in place; the other kinds are never touched.

The study name is the one folder name between ``<out>`` and the kind: it is checked to be one
safe path component (``check_study_name``) and the resolved folder to be inside ``<out>``, so
a name such as ``..`` or ``/home/me`` can never make a report replace anything else.
"""

from __future__ import annotations

import html as _html
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dlfm_auto._errors import UserError
from dlfm_auto._io import atomic_write_text
from dlfm_auto.training._result import r2_mse

REPORTS_DIR = Path("reports")


def skill(obs: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """R² (coefficient of determination, as the CV objective), MSE, RMSE, bias, NSE, r.

    NSE = 1 - SSE / SS(obs - mean(obs)) is numerically the same as this R²; both are given
    because hydrology and flux papers report them under these names. ``r`` is Pearson's r.
    """
    obs = np.asarray(obs, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    err = pred - obs
    nse, mse = r2_mse(obs, pred)
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


#: The kinds of report, each the name of the one sub-folder it owns under ``<out>/<study>/``.
KINDS = ("final", "variables", "memory")


def report_dir(out_root: Path | str, study_name: str, kind: str | None) -> Path:
    """``<out>/<study>/<kind>``, after checking that it is safe and writable (before any work).

    Refuses a study name that is not one safe folder name (old studies may have one), a
    resolved folder outside ``<out>`` (a symlinked study folder), and an ``--out`` that is not
    a folder or cannot be written. ``kind=None``: a report across studies that owns the whole
    ``<out>/<name>/`` folder (the leaderboard), under the same rules.
    """
    from dlfm_auto.study._spec import check_study_name

    assert kind is None or kind in KINDS, kind
    check_study_name(study_name)
    root = Path(out_root)
    study_dir = root / study_name
    for p in (root, study_dir, *((study_dir / kind,) if kind else ())):
        if p.exists() and not p.is_dir():
            raise UserError(f"--out: {p} exists and is not a folder")
        if p != root and p.is_symlink():
            raise UserError(f"--out: {p} is a symbolic link; a report replaces only real "
                            "folders inside the reports folder")
    check_writable(root)
    resolved = study_dir.resolve()
    if resolved.parent != root.resolve():
        raise UserError(f"--out: the report folder of study {study_name!r} resolves to "
                        f"{resolved}, outside {root}")
    if study_dir.exists():
        check_writable(study_dir)
    return study_dir / kind if kind else study_dir


def check_writable(folder: Path) -> None:
    """The folder, or the nearest existing folder above it, must accept a new sub-folder."""
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise UserError(f"--out: cannot create {folder}: {probe_in} is not a folder")
    probe = probe_in / f".dlfm_auto-write-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:  # a real write test: permissions, read-only file systems, root's exceptions alike
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        raise UserError(f"--out: cannot write to {folder} ({probe_in} does not accept a new "
                        f"folder: {e.strerror or e})"
                        ) from None


@contextmanager
def report_folder(dest: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``dest`` (and only it) atomically.

    Folders get normal modes (0777 less the umask, as ``mkdir`` gives), not the 0700 of a
    ``tempfile`` folder. Under ``<out>/<study>/`` the study's index page is then rewritten.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = dest.parent / f".{dest.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{tag}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if dest.name in KINDS:
        write_study_index(dest.parent)


def _remove_leftovers(dest: Path) -> None:
    """Remove this report's hidden temp/old folders left by a killed process (pid gone)."""
    for p in dest.parent.glob(f".{dest.name}.*-*-*"):
        kind, _, rest = p.name[len(dest.name) + 2:].partition("-")
        pid = rest.split("-", 1)[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def write_study_index(study_dir: Path) -> None:
    """``<out>/<study>/index.html``: links to the kinds of report present (atomic write)."""
    present = [k for k in KINDS if (study_dir / k / "index.html").exists()]
    name = _html.escape(study_dir.name)
    links = "".join(f"<li><a href='{k}/index.html'>{k}</a> ({k}/report.md, {k}/metrics.json)"
                    "</li>" for k in present)
    atomic_write_text(study_dir / "index.html", (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Reports: {name}</title>"
        "</head><body style='font-family:system-ui,sans-serif;max-width:800px;margin:2em auto'>"
        f"<h1>Reports: {name}</h1><ul>{links}</ul></body></html>\n"))


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON: a NaN or infinite number is written as ``null``, never as bare ``NaN``."""
    path.write_text(json.dumps(_finite(obj), indent=2, default=_json_default,
                               allow_nan=False) + "\n")


def _finite(o: Any) -> Any:
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o


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
