"""Creating and resuming a study: its spec, sampler and pruner, and the work it must queue.

``create_or_resume`` is run once by the coordinator (``run-study``) before any worker starts:
it creates the storage and study (several processes creating a new SQLite database at once
crash), refuses a spec that differs from the stored one, fails trials left RUNNING by a dead
process (heartbeat), and queues the work that must be (re)done: every missing grid point, and
the parameters of trials interrupted by Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from dlfm_auto._errors import UserError
from dlfm_auto._urls import StorageURL, mask_secrets
from dlfm_auto.data import PrepareConfig, cached_sha256, prepare
from dlfm_auto.models import get_family
from dlfm_auto.study._notes import METRIC_NAME, save_study_note
from dlfm_auto.study._objective import default_sequence_length, grid_points
from dlfm_auto.study._space import feasible_space
from dlfm_auto.study._spec import (
    SPEC_ATTR,
    StudySpec,
    check_study_name,
    code_version,
    differences,
    now_iso,
    versions,
)
from dlfm_auto.study._storage import LIVE, as_storage, fail_dead_local_trials, guarded, trial_point

MAX_GRID_RETRIES = 3
WILCOXON_MIN_FOLDS = 5
MAX_NAME_BYTES = 120  # a study name is a folder name: well under the 255-byte file name limit


def make_sampler(spec: StudySpec, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``worker`` gives each process its own random stream.

    A grid study runs only queued points (every parameter is fixed by the queue), so it needs
    no GridSampler: Optuna's GridSampler fails on queued trials of a 1-point grid (KeyError
    'grid_id' in ``after_trial``) and hands one point to several workers.
    """
    seed = spec.seed + 1000 * worker  # distinct streams per worker: no duplicate suggestions
    if spec.sampler in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=10)


def make_pruner(spec: StudySpec, stride: int, n_folds: int) -> optuna.pruners.BasePruner:
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, stride // 20),
                                              max_resource=stride * n_folds)
    # Median: after 5 finished trials, stop one whose best fold R² so far is below the median
    # of earlier trials at the same fold and epoch; no decision in a fold's first epochs.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min(10, stride // 2))


def build_spec(family: str, prep: PrepareConfig, *, length_given: bool, **kw: Any) -> StudySpec:
    """A spec for a new run: resolves defaults and reads the data once (errors surface here)."""
    get_family(family)  # an unknown name fails here, before the data is read
    sampler = kw.get("sampler", "tpe")
    if kw.get("pruner") == "wilcoxon" and prep.folds < WILCOXON_MIN_FOLDS:
        # A one-sided signed-rank test over k folds has smallest p-value 2^-k: below the 0.1
        # threshold only from k = 4, so with fewer than 5 folds it can never stop a trial
        # before its last fold (with 3 it pruned nothing in bench_study.py pruners).
        raise UserError(f"pruner='wilcoxon' compares trials fold by fold and needs folds >= "
                        f"{WILCOXON_MIN_FOLDS}: after k folds its smallest p-value is 2^-k, "
                        f"under its 0.1 threshold only from k = 4, so with folds={prep.folds} "
                        "it can never stop a trial early; use --folds 5 or more, or "
                        "--pruner median")
    # TPE/random search L for every family whose space has it: a non-sequence family's
    # flatten/stats feeds use the window (with L fixed at 1 they were all "today").
    fixed = length_given or sampler == "grid"
    if sampler == "grid" and not length_given:
        prep = prep.replace(sequence_length=default_sequence_length(family))
    ds = prepare(prep)
    n_folds = min(prep.folds, len(ds.fold_years))
    if kw.get("pruner") == "wilcoxon" and n_folds < WILCOXON_MIN_FOLDS:
        raise UserError(f"pruner='wilcoxon' needs folds >= {WILCOXON_MIN_FOLDS}, but these data "
                        f"give only {n_folds} fold(s) (validation years "
                        f"{', '.join(map(str, ds.fold_years)) or 'none'}); use --pruner median")
    y = np.asarray(ds.y, dtype=float)
    if len(y) and not np.nanmax(y) > np.nanmin(y):
        raise UserError(f"the target {ds.source.target} is constant ({np.nanmin(y):g} on every "
                        "sample): there is nothing to predict; pass --target with another column")
    src = ds.source
    files = tuple({"name": s.name, "site": n, "sha256": s.sha256}
                  for n, s in zip(ds.site_names, ds.sources, strict=True))
    if kw.get("cv_score") == "pooled" and not prep.multi_site:
        raise UserError("--cv-score pooled needs several sites (one site: use mean or median)")
    if kw.get("search_site_norm") and not prep.multi_site:
        raise UserError("--search-site-norm needs several sites: pass --data with two or more "
                        "files, one per site")
    spec = StudySpec(
        family=family, prep=prep, fixed_length=fixed, data_sha256=src.sha256,
        data_name=src.name, site=src.site, target=src.target, inputs=src.inputs,
        data_files=files, sites=ds.site_names,
        site_info_sha256=cached_sha256(Path(prep.site_info)) if prep.site_info else None, **kw,
    )
    feasible_space(spec)  # a study that no setting can fit is refused here, in one line
    return spec


def default_study_name(spec: StudySpec) -> str:
    import re

    site = spec.site or spec.data_name.split(".")[0]
    if spec.sites:  # several sites: their names while short, else how many
        joined = "+".join(spec.sites)
        site = (joined if len(joined) <= 60 else f"{len(spec.sites)}sites-{spec.data_sha256[:8]}"
                ) + ("-loso" if spec.prep.cv == "sites" else "")
    site = re.sub(r"[^A-Za-z0-9._+-]+", "_", site).strip("._") or "site"
    return (f"{spec.family}-{site}"[: MAX_NAME_BYTES - 5]
            + ("-grid" if spec.sampler == "grid" else ""))


def load_spec(study: optuna.Study) -> StudySpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise UserError(f"study {study.study_name!r} was not created by dlfm_auto")
    return StudySpec.from_dict(raw)


def create_or_resume(storage: str | StorageURL | optuna.storages.BaseStorage, study_name: str,
                     spec: StudySpec) -> optuna.Study:
    """Create the study or check the stored spec; fail dead trials; queue needed work.

    Everything from "does the study exist" to "spec stored, work queued" runs under the
    storage's exclusive lock: two processes starting on one study at once cannot both store
    different settings, nor queue the same grid point twice.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_study_name(study_name)  # before the storage is touched
    storage = as_storage(storage)
    g = guarded(storage)
    with g.exclusive() if g is not None else contextlib.nullcontext():
        try:
            study = optuna.create_study(storage=storage, study_name=study_name,
                                        direction="maximize", load_if_exists=True,
                                        sampler=make_sampler(spec))
        except Exception as e:
            raise UserError(f"cannot create study {study_name!r}: "
                            f"{mask_secrets(str(e).splitlines()[0])}") from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise UserError(f"study {study_name!r} exists and was not created by dlfm_auto")
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None and study.trials:
            raise UserError(f"study {study_name!r} exists and was not created by dlfm_auto")
        if stored is not None:
            old = StudySpec.from_dict(stored)
            diff = differences(old.identity(), spec.identity())
            if diff:
                raise UserError(
                    f"study {study_name!r} was created with other data or settings ("
                    + "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
                    + "); pass --study-name NEW for a new study, or the same settings to resume"
                )
        if spec.sampler == "grid":
            spec = spec.replace(n_trials=len(grid_points(spec)))
        study.set_user_attr(SPEC_ATTR, spec.to_dict())
        for k, v in (("family", spec.family), ("site", spec.site), ("data_file", spec.data_name),
                     ("data_sha256", spec.data_sha256), ("target", spec.target),
                     ("inputs", list(spec.inputs)), ("n_trials", spec.n_trials),
                     ("versions", versions()), ("code_version", code_version())):
            study.set_user_attr(k, v)
        study.set_metric_names([METRIC_NAME])  # the dashboard names the objective
        if stored is None:
            study.set_user_attr("created", now_iso())
            save_study_note(study, spec)  # the settings, until a run adds its results
        study.set_user_attr("updated", now_iso())
        fail_dead_local_trials(study)
        optuna.storages.fail_stale_trials(study)
        if spec.sampler == "grid":
            queue_missing_grid_points(study, spec)
        else:
            _requeue_interrupted(study)
    return study


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def queue_missing_grid_points(study: optuna.Study, spec: StudySpec) -> None:
    """Exact grid coverage: queue each point with no finished, running or queued trial.

    A trial stands for its queued point (``trial_point``), not for the parameters it had drawn
    when it was killed: a grid trial killed after drawing one value still covers its whole
    point. A point is given up after ``MAX_GRID_RETRIES`` trials failed with an error (not
    kills).
    """
    g = guarded(study._storage)
    with g.exclusive() if g is not None else contextlib.nullcontext():
        covered, failures = set(), {}
        for t in study.get_trials(deepcopy=False):
            k = _key(trial_point(t))
            if t.state in LIVE:
                covered.add(k)
            elif t.state == TrialState.FAIL and "traceback" in t.user_attrs:
                # only errors count: a point whose process was killed is re-run, however often
                failures[k] = failures.get(k, 0) + 1
        for point in grid_points(spec):
            k = _key(point)
            if k not in covered and failures.get(k, 0) < MAX_GRID_RETRIES:
                study.enqueue_trial(point, skip_if_exists=False)


def _requeue_interrupted(study: optuna.Study) -> None:
    """Re-run the parameters of trials that Ctrl-C interrupted (once each)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
                and t.number not in retried and t.params):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def load_study(storage: str | StorageURL | optuna.storages.BaseStorage, name: str
               ) -> optuna.Study:
    """Load a study by name (a URL is opened read-only and must exist); an unknown name lists
    the closest names (password masked)."""
    storage = as_storage(storage, heartbeat=False, must_exist=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        from dlfm_auto._errors import close_matches

        names = optuna.get_all_study_names(storage)
        hint = close_matches(name, names)
        more = (f"; closest: {', '.join(hint)}" if hint else
                f"; studies there: {', '.join(names[:8])}" if names else "; it holds no study")
        g = guarded(storage)
        where = f" in {g.location.display}" if g is not None and g.location is not None else ""
        raise UserError(f"no study named {name!r}{where}{more}") from None


def check_data(spec: StudySpec, data_override: str | tuple[str, ...] | None = None
               ) -> StudySpec:
    """The study's data files must exist and hold what they held (sha256): the one check.

    ``data_override``: local copies (``--data``), one per file of the study, in its order;
    the returned spec reads them. Workers and reports refuse a moved, changed or other file
    here, naming it, before any work.
    """
    n = len(spec.data_files) or 1
    if data_override:
        given = 1 if isinstance(data_override, str) else len(data_override)
        if given != n:
            names = ", ".join(f["name"] for f in spec.data_files) or spec.data_name
            raise UserError(f"--data got {given} file(s); the study has {n} ({names}): pass "
                            "one copy of each, in that order")
        spec = spec.replace(prep=spec.prep.replace(data=data_override))
    expected = spec.data_files or ({"name": spec.data_name, "sha256": spec.data_sha256},)
    for path, want in zip(spec.prep.paths, expected, strict=True):
        if not path.exists():
            raise UserError(f"the study's data file {path} no longer exists; pass --data with "
                            f"a copy of {want['name']}")
        sha = cached_sha256(path)
        if want["sha256"] and sha != want["sha256"]:
            what = "differs from the study's file" if data_override else "changed since the study ran"
            raise UserError(f"the data file {path} {what} ({want['name']}; sha256 {sha[:12]}... "
                            f"vs {want['sha256'][:12]}...); pass --data with the original file")
    if spec.site_info_sha256:
        p = Path(spec.prep.site_info or "")
        if not p.is_file() or cached_sha256(p) != spec.site_info_sha256:
            raise UserError(f"the study's --site-info file {p} is missing or changed since the "
                            "study ran; restore it (it is checked by hash)")
    return spec
