"""A trained ensemble that predicts daily NEE for any daily table with the study's drivers.

``report final`` trains ``num_models`` seeds of the best parameters on the training years and
saves them as one :class:`Ensemble` file (``ensemble.pt`` in the final report's folder):
the models (torch state dicts, or the fitted tree models), the normalisation statistics of
the training part, the parameters, and the feature spec needed to rebuild the inputs (drivers,
window length, day of year, window statistics, lagged NEE, the window gap rule) from a file
the study never saw. The climatology of the training part travels with it, so every
prediction stands beside the reference it must beat.

Predictions are for **every day whose window of drivers is complete** (the same rule as the
study's samples: the day's own drivers measured, gaps of up to ``window_gap_days`` inside the
window interpolated), whether or not NEE was observed that day: gap-filling. The features are
built by the same functions as the study's samples (``build_calendar``, ``fill_short_gaps``,
``windows``), so a day the study scored gets exactly the prediction the final report made.

An ensemble of a multi-site study whose inputs depend on the site (static site features,
per-site driver standardisation) keeps each site's features and driver statistics
(``sites``) and predicts a file of one of those sites, known by its name.

The file is a zlib-compressed pickle (tree models are Python objects): load only ensembles
you wrote. A corrupt or foreign file is a one-line error.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlfm_auto._errors import UserError
from dlfm_auto.data import Normalizer, PrepareConfig
from dlfm_auto.data._windows import build_calendar, fill_short_gaps, valid_targets, windows

FORMAT_VERSION = 1
MAGIC = b"DLFM-ENSEMBLE\n"  # then a zlib-compressed torch.save payload


@dataclass
class Ensemble:
    """``models`` trained on one training part; ``predict`` takes a daily table (see module)."""

    family: str
    params: dict[str, Any]
    models: list[Any]
    norm: Normalizer  # statistics of the training part the models were trained on
    inputs: tuple[str, ...]  # the drivers, named as in the file
    target: str
    target_units: str
    sequence_length: int
    doy: bool = False
    stats_window: int = 0
    lag_nee: bool = False
    window_gap_days: int = 0
    climatology: np.ndarray | None = None  # (366,) by 0-based day of year, training part
    prep: dict[str, Any] = field(default_factory=dict)  # PrepareConfig settings (no data path)
    meta: dict[str, Any] = field(default_factory=dict)  # study, site, data file, years, ...
    #: Several sites whose inputs depend on the site (static features, per-site driver
    #: standardisation): per site {"static": [...], "mean": [...], "std": [...]} (see
    #: :meth:`site_inputs`); empty otherwise.
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_training(cls, family: str, params: dict[str, Any], models: list[Any],
                      norm: Normalizer, prep: PrepareConfig, source: Any,
                      climatology: np.ndarray | None, meta: dict[str, Any],
                      sites: dict[str, dict[str, Any]] | None = None) -> Ensemble:
        """An ensemble from the final report's models and the config that made their samples."""
        return cls(
            family=family, params=dict(params), models=list(models), norm=norm,
            inputs=tuple(source.inputs), target=source.target,
            target_units=source.target_units, sequence_length=prep.sequence_length,
            doy=prep.doy, stats_window=prep.stats_window, lag_nee=prep.lag_nee,
            window_gap_days=prep.window_gap_days,
            climatology=None if climatology is None else np.asarray(climatology, np.float64),
            prep=prep.settings(), meta=dict(meta), sites=dict(sites or {}),
        )

    # -- predicting ---------------------------------------------------------------------
    def read_config(self, path: str | Path) -> PrepareConfig:
        """How to read ``path`` into a daily table as the study read its own file.

        The study's daily settings (daylight, counts, USTAR, QC) with its target and drivers
        named explicitly; window matching is dropped (predictions need no matched days).
        """
        kw = {k: v for k, v in self.prep.items() if k in _DAILY_KEYS}
        kw.update(target=self.target, columns=tuple(self.inputs))
        return PrepareConfig(data=str(path), **kw)

    def features(self, table: pd.DataFrame, site: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(days, raw windows (n, L, f), observed NEE (NaN where none)) of every predictable day.

        ``table``: daily rows indexed by date, with the drivers (``inputs``) and, when present,
        ``NEE`` (needed with ``lag_nee``) and ``SEASON_YEAR`` (not needed). ``site``: which of
        a multi-site study's sites the table is, where its inputs depend on the site.
        """
        from dlfm_auto.data._sites import STATIC_PREFIX

        entry = self._site_entry(site)
        missing = [c for c in self.inputs if c not in table.columns]
        if missing:
            raise UserError(f"the daily table lacks the ensemble's driver(s) {', '.join(missing)}")
        t = table.copy()
        t.index = pd.DatetimeIndex(t.index)
        if "NEE" not in t.columns:
            t["NEE"] = np.nan
        if "SEASON_YEAR" not in t.columns:
            t["SEASON_YEAR"] = np.nan
        t = t.sort_index()
        cal = build_calendar(t, self.inputs, doy=self.doy, stats_window=self.stats_window,
                             lag_nee=self.lag_nee)
        names = list(cal.feature_names)
        # static site features come last, added below (they are not in a file)
        want = [n for n in self.norm.feature_names if not n.startswith(STATIC_PREFIX)]
        cols = [names.index(n) for n in want]  # constant columns the study dropped stay out
        cal = dataclasses.replace(cal, features=cal.features[:, cols], feature_names=tuple(want))
        measured = np.isfinite(cal.features).all(axis=1)
        cal = fill_short_gaps(cal, self.window_gap_days)
        # every day whose window is complete, NEE or not (valid_targets asks for NEE: give 0)
        anyday = dataclasses.replace(cal, nee=np.zeros_like(cal.nee))
        targets = valid_targets(anyday, self.sequence_length, measured)
        X = windows(cal, self.sequence_length, targets)
        if entry is not None:
            X = _with_site_inputs(X, entry)
        return cal.days[targets], X, cal.nee[targets]

    def _site_entry(self, site: str | None) -> dict[str, Any] | None:
        """The site's stored inputs where the ensemble's inputs depend on the site (None:
        they do not). Refuses an unknown site: its features or statistics are not stored."""
        from dlfm_auto.data._sites import STATIC_PREFIX

        static = any(n.startswith(STATIC_PREFIX) for n in self.norm.feature_names)
        if not static and not self.prep.get("site_norm"):
            return None
        what = ("static site features (--site-info)" if static else
                "per-site driver standardisation (--site-norm)")
        if site not in self.sites:
            known = ", ".join(self.sites) or "none stored (re-run `report final`)"
            raise UserError(f"the ensemble of study {self.meta.get('study', '?')!r} uses {what}: "
                            f"it predicts only for its own sites ({known}), not "
                            f"{site or 'a table of unknown site'}")
        return self.sites[site]

    def predict_windows(self, X: np.ndarray) -> np.ndarray:
        """Each model's NEE for raw windows ``X`` (n, L, f): shape (models, n)."""
        from dlfm_auto.training import predict

        Xn = self.norm.apply(X)
        return np.stack([predict(self.family, m, Xn) for m in self.models]) if len(Xn) else \
            np.zeros((len(self.models), 0))

    def predict(self, table: pd.DataFrame, site: str | None = None) -> pd.DataFrame:
        """Daily NEE for every day of ``table`` whose window of drivers is complete.

        Columns: ``date``, ``observed`` (NaN on days without NEE: the gaps filled),
        ``predicted`` (ensemble mean), ``predicted_sd`` (spread of the models, ddof 0),
        ``climatology`` (the training part's day-of-year mean).
        """
        days, X, obs = self.features(table, site)
        p = self.predict_windows(X)
        out = pd.DataFrame({
            "date": pd.DatetimeIndex(days).strftime("%Y-%m-%d"),
            "observed": obs,
            "predicted": p.mean(axis=0) if p.size else np.zeros(0),
            "predicted_sd": p.std(axis=0) if p.size else np.zeros(0),
        })
        if self.climatology is not None:
            from dlfm_auto.training._baselines import day_of_year

            out["climatology"] = self.climatology[day_of_year(days)] if len(days) else []
        return out

    def predict_file(self, path: str | Path) -> pd.DataFrame:
        """Read a flux file as the study read its own, check it, and :meth:`predict` it.

        Refuses (one-line :class:`UserError`) a file without one of the study's drivers or
        its target column, or whose NEE is in other units (a FLUXNET daily file for a study of
        half-hourly data: 24-h sums in gC m-2 d-1, not daylight means in µmol m-2 s-1).
        """
        from dlfm_auto._errors import close_matches
        from dlfm_auto.data import load_daily
        from dlfm_auto.data._read import read_header

        header = read_header(path)
        cols = [c for c in header.columns]
        missing = [c for c in (*self.inputs, self.target) if c not in cols]
        if missing:
            parts = []
            for c in missing:
                hint = close_matches(c, cols)
                role = "target" if c == self.target else "driver"
                parts.append(f"{role} {c}" + (f" (closest: {', '.join(hint)})" if hint else ""))
            raise UserError(f"{path} lacks the study's {'; '.join(parts)}: it needs "
                            f"{', '.join(self.inputs)} and {self.target} (empty on days to "
                            "gap-fill), named as in the study's file")
        from dlfm_auto.data._prepare import TARGET_UNITS

        units = TARGET_UNITS.get(header.format, "?")
        if units != self.target_units:
            raise UserError(f"{path} is a {header.format} file (NEE in {units}); the study's "
                            f"models were trained on NEE in {self.target_units}: give a "
                            f"file of the same kind as {self.meta.get('data_file', 'its file')}")
        table, _, src = load_daily(self.read_config(path))
        from dlfm_auto.data._sites import site_name

        return self.predict(table, site_name(src))

    # -- saving -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the ensemble (atomically) to ``path``; :meth:`load` reads it back."""
        import io

        import torch

        from dlfm_auto._io import atomic_write_bytes

        payload = {
            "format": FORMAT_VERSION,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("models", "norm", "climatology")},
            "inputs": list(self.inputs),
            "norm": self.norm.to_dict(),
            "climatology": None if self.climatology is None else self.climatology.tolist(),
            "models": [_model_payload(m) for m in self.models],
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        # zlib level 1: a fitted forest shrinks ~4x (49 -> 12 MB for 2 x 100 trees) in 0.4 s
        atomic_write_bytes(path, MAGIC + zlib.compress(buf.getvalue(), 1))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        """Read an ensemble written by :meth:`save` (models on the CPU)."""
        import io

        import torch

        from dlfm_auto.models import get_family

        try:
            blob = Path(path).read_bytes()
        except FileNotFoundError:
            raise UserError(f"no ensemble file {path}") from None
        except OSError as e:
            raise UserError(f"cannot read the ensemble file {path}: {e.strerror or e}") from None
        if not blob.startswith(MAGIC):
            raise UserError(f"{path} is not an ensemble file of dlfm_auto (re-run `report final`)")
        try:
            d = torch.load(io.BytesIO(zlib.decompress(blob[len(MAGIC):])), map_location="cpu",
                           weights_only=False)
        except Exception as e:
            raise UserError(f"cannot read the ensemble file {path}: {str(e).splitlines()[0]}"
                            ) from None
        if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION:
            raise UserError(f"{path} is not an ensemble file of this version of dlfm_auto "
                            "(re-run `report final`)")
        norm = Normalizer.from_dict(d["norm"])
        fam = get_family(d["family"])
        models = []
        for m in d["models"]:
            if m["kind"] == "torch":
                net = fam.build(d["params"], len(norm.feature_names), d["sequence_length"])
                net.load_state_dict(m["state_dict"])
                net.eval()
                models.append(net)
            else:
                models.append(m["model"])
        clim = d.get("climatology")
        return cls(
            family=d["family"], params=d["params"], models=models, norm=norm,
            inputs=tuple(d["inputs"]), target=d["target"], target_units=d["target_units"],
            sequence_length=int(d["sequence_length"]), doy=d["doy"],
            stats_window=d["stats_window"], lag_nee=d["lag_nee"],
            window_gap_days=d["window_gap_days"],
            climatology=None if clim is None else np.asarray(clim, np.float64),
            prep=d.get("prep", {}), meta=d.get("meta", {}), sites=d.get("sites", {}),
        )


#: The PrepareConfig settings that shape a daily table (plus the window settings predictions
#: rebuild themselves); ``match_length`` and the split settings do not apply to predictions.
_DAILY_KEYS = (*PrepareConfig.DAILY_FIELDS, "window_gap_days")


def _with_site_inputs(X: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """Raw windows of one site as the study built them (``data/_sites.py``): drivers scaled by
    the site's own training-year statistics (where stored), then its static features."""
    from dlfm_auto.data._sites import scale_by_site

    X = np.asarray(X, dtype=np.float32)
    if entry.get("mean") is not None:
        X = scale_by_site(X, entry["mean"], entry["std"])
    static = np.asarray(entry.get("static") or [], dtype=np.float32)
    if static.size:
        X = np.concatenate([X, np.broadcast_to(static, (*X.shape[:2], static.size))], axis=2)
    return X


def _model_payload(model: Any) -> dict[str, Any]:
    import torch

    if isinstance(model, torch.nn.Module):
        return {"kind": "torch", "state_dict": {k: v.detach().cpu()
                                                for k, v in model.state_dict().items()}}
    return {"kind": "object", "model": model}


__all__ = ["Ensemble"]
