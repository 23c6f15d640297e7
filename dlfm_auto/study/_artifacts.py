"""Best-model artifacts: weights + normalisation stats, in Optuna's artifact store.

When a trial beats the study's best, its fold models (torch state dicts, or the fitted tree
models) and the normalisation statistics of each fold are saved as one file and uploaded to a
``FileSystemArtifactStore``; the trial records the artifact id. optuna-dashboard lists it on the
trial page (started with ``--artifact-dir``), and reports can inspect the models without
retraining.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

ARTIFACT_ATTR = "model_artifact_id"


def _model_payload(model: Any) -> Any:
    import torch

    if isinstance(model, torch.nn.Module):
        return {"kind": "torch", "state_dict": {k: v.detach().cpu()
                                                for k, v in model.state_dict().items()}}
    return {"kind": "object", "model": model}


class BestModelSaver:
    """``on_best`` hook of the objective: uploads the fold models of each new best trial."""

    def __init__(self, artifacts_dir: str) -> None:
        self.dir = artifacts_dir
        Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
        self.store = FileSystemArtifactStore(artifacts_dir)

    def __call__(self, trial: optuna.Trial, value: float, params: dict, results: list,
                 dataset: Any, splits: list) -> None:
        import torch

        try:
            if value <= trial.study.best_value:
                return
        except ValueError:
            pass  # no complete trial yet: this one is the best so far
        payload = {
            "family": trial.study.user_attrs.get("family"),
            "params": params,
            "trial": trial.number,
            "cv_r2": value,
            "sequence_length": dataset.sequence_length,
            "feature_names": list(dataset.feature_names),
            "fingerprint": dataset.fingerprint(),
            "folds": [
                {"val_years": list(s.val_years), "r2": float(r.r2), "mse": float(r.mse),
                 "best_epoch": int(r.best_epoch), "norm": s.norm.to_dict(),
                 **_model_payload(r.model)}
                for s, r in zip(splits, results, strict=True)
            ],
        }
        fd, tmp = tempfile.mkstemp(prefix=f"trial{trial.number}-", suffix=".pt")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            art = upload_artifact(artifact_store=self.store, file_path=tmp, study_or_trial=trial,
                                  mimetype="application/octet-stream")
        finally:
            Path(tmp).unlink(missing_ok=True)
        trial.set_user_attr(ARTIFACT_ATTR, art)


def load_best_models(study: optuna.Study, artifacts_dir: str) -> dict[str, Any] | None:
    """The payload saved for the best trial, or None when it has no artifact."""
    import torch

    best = study.best_trial
    art = best.user_attrs.get(ARTIFACT_ATTR)
    if art is None:
        return None
    store = FileSystemArtifactStore(artifacts_dir)
    with tempfile.TemporaryDirectory() as d:
        dest = os.path.join(d, "model.pt")
        download_artifact(artifact_store=store, artifact_id=art, file_path=dest)
        return torch.load(dest, weights_only=False)
