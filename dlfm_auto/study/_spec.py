"""What a study is: one (data, family, preprocessing config) plus how it is searched.

The data are one flux file, or several (one site each) for a multi-site study.

The spec is stored in the study's user attributes when the study is created. Workers rebuild
the objective from it (so a worker on another machine needs only the storage URL and the study
name), reports read it, and a re-run with other data or settings is refused instead of mixing
incompatible trials into one study.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from dlfm_auto._errors import UserError
from dlfm_auto.data import PrepareConfig

SPEC_ATTR = "dlfm_auto.spec"
SAMPLERS = ("tpe", "grid", "random")
#: A study name becomes a folder name (reports/<study>/): one safe path component.
STUDY_NAME_MAX = 128
STUDY_NAME_RULE = (f"1-{STUDY_NAME_MAX} characters: letters, digits, space, '.', '_', '-' or '+', "
                   "starting with a letter or digit")
_STUDY_NAME_PUNCT = frozenset(" ._-+")
PRUNERS = ("median", "hyperband", "wilcoxon", "none")
#: What a trial's value is: the mean of its fold R² (default), their median, or the R² of all
#: folds' predictions pooled (several sites). Across sites, the mean is ruled by the worst
#: site (an R² of -3 at a site with little NEE variance outweighs three good sites).
CV_SCORES = ("mean", "median", "pooled")


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines the trials of a study (see ``identity`` for what must match)."""

    family: str
    prep: PrepareConfig
    sampler: str = "tpe"
    pruner: str = "median"
    n_trials: int = 20
    max_epochs: int | None = None
    fixed_length: bool = False  # sequence_length given by the user (else searched)
    seed: int = 0
    patience: int = 50
    data_sha256: str = ""
    data_name: str = ""
    site: str | None = None
    target: str = ""
    inputs: tuple[str, ...] = ()
    # several sites: per file {"name", "site", "sha256"}, in --data order (data_sha256 then
    # hashes them all, with the --site-info file), and the site names
    data_files: tuple[dict[str, str], ...] = ()
    sites: tuple[str, ...] = ()
    site_info_sha256: str | None = None
    #: several sites: trials draw ``site_norm`` (per-site driver standardisation) as a parameter
    search_site_norm: bool = False
    cv_score: str = "mean"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UserError(f"invalid sampler={self.sampler!r}: must be one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise UserError(f"invalid pruner={self.pruner!r}: must be one of {', '.join(PRUNERS)}")
        if self.cv_score not in CV_SCORES:
            raise UserError(f"invalid cv_score={self.cv_score!r}: must be one of "
                            f"{', '.join(CV_SCORES)}")
        if self.n_trials < 0:
            raise UserError(f"invalid n_trials={self.n_trials}: must be >= 0")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise UserError(f"invalid max_epochs={self.max_epochs}: must be >= 1")

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the study (n_trials, pruner may change)."""
        extra: dict[str, Any] = {"search_site_norm": True} if self.search_site_norm else {}
        if self.cv_score != "mean":
            extra["cv_score"] = self.cv_score
        return {**extra,
            "family": self.family,
            "data_sha256": self.data_sha256,
            "target": self.target,
            "inputs": list(self.inputs),
            "prep": _jsonable(self.prep.settings()),
            "sampler": self.sampler,
            "max_epochs": self.max_epochs,
            "fixed_length": self.fixed_length,
            "seed": self.seed,
            "patience": self.patience,
        }

    def to_dict(self) -> dict[str, Any]:
        d = _jsonable(dataclasses.asdict(self))
        d["prep"] = {"data": _jsonable(self.prep.data), **_jsonable(self.prep.settings())}
        if self.prep.site_info is not None:  # a path, kept out of the identity (its hash is in)
            d["prep"]["site_info"] = self.prep.site_info
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        d = dict(d)
        prep = dict(d.pop("prep"))
        # Studies stored before the setting existed were prepared with the DLFM rule.
        prep.setdefault("window_gap_days", 0)
        if prep.get("columns") is not None:
            prep["columns"] = tuple(prep["columns"])
        d["inputs"] = tuple(d.get("inputs", ()))
        d["data_files"] = tuple(dict(f) for f in d.get("data_files", ()))
        d["sites"] = tuple(d.get("sites", ()))
        if isinstance(prep.get("data"), list):
            prep["data"] = tuple(prep["data"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(prep=PrepareConfig(**prep), **{k: v for k, v in d.items() if k in known})

    def replace(self, **kw: Any) -> StudySpec:
        return dataclasses.replace(self, **kw)


def check_study_name(name: str) -> str:
    """Refuse a study name that is not one safe folder name (``/x``, ``..``, ``a/b``, too long).

    Reports write to ``reports/<study>/``; a name that is a path would make them write (and
    replace) somewhere else. The rule also keeps the name a valid file name on every system.
    """
    ok = (0 < len(name) <= STUDY_NAME_MAX and name[0].isalnum()
          and all(c.isalnum() or c in _STUDY_NAME_PUNCT for c in name))
    if not ok:
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise UserError(f"invalid study name {shown!r}: must be {STUDY_NAME_RULE}")
    return name


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def differences(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable list of settings that differ between two identities."""
    out = []
    for key in sorted(set(stored) | set(new)):
        a, b = stored.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in differences(a, b)]
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def versions() -> dict[str, str]:
    """Versions of the packages that shape results, plus Python."""
    out = {"python": platform.python_version()}
    for pkg in ("dlfm_auto", "optuna", "torch", "numpy", "pandas", "scikit-learn",
                "xgboost-cpu", "xgboost", "xlstm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def code_version() -> str:
    """Git commit of the package's checkout when there is one, else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            return rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return versions().get("dlfm_auto", "unknown")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
