"""Files kept beside a study: plots, dashboard notes and the best weights.

Plots go through Optuna's artifact store, so optuna-dashboard started with the
same ``--artifact-dir`` shows them next to each trial. The weights of the best
complete trial of each study are kept as a plain ``state_dict`` file under
``<artifact dir>/weights/<study>/``, for ``blocksearch export``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import optuna
import optuna_dashboard
import torch
from optuna.trial import TrialState

from blocksearch.plots import plot_gradient_profile, plot_learning_curves

__all__ = ["TrialArtifacts", "best_weights_path"]

logger = logging.getLogger("blocksearch")


def best_weights_path(artifact_dir: Path, study_name: str) -> Path | None:
    """Return the weights file kept for a study, or None when there is none."""
    files = sorted((Path(artifact_dir) / "weights" / study_name).glob("trial-*.pt"))
    return files[-1] if files else None


class TrialArtifacts:
    """Writes the plots, note and best weights of trials into one folder.

    Args:
        directory: Root of the artifact store; created when missing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            from blocksearch.errors import StudyError

            raise StudyError(
                f"cannot create artifact folder {str(self.directory)!r}: "
                f"{error.strerror}; choose another with --artifact-dir"
            ) from None
        self.store = optuna.artifacts.FileSystemArtifactStore(str(self.directory))

    def attach(self, trial: optuna.Trial, note: str) -> None:
        """Upload the trial's learning curves and gradient profile; save its note.

        Failures are logged, not raised: a missing plot must not lose a trial.
        """
        try:
            with tempfile.TemporaryDirectory() as folder:
                for name, draw in (
                    ("learning_curves.png", plot_learning_curves),
                    ("gradient_profile.png", plot_gradient_profile),
                ):
                    path = draw(trial, Path(folder) / name)
                    optuna.artifacts.upload_artifact(
                        artifact_store=self.store,
                        file_path=str(path),
                        study_or_trial=trial,
                        mimetype="image/png",
                    )
            optuna_dashboard.save_note(trial, note)
        except Exception as error:  # plotting or storage trouble: keep the trial
            logger.warning(
                "trial %d: could not save plots or note: %s: %s",
                trial.number,
                type(error).__name__,
                error,
            )

    def keep_if_best(
        self, trial: optuna.Trial, value: float, model: torch.nn.Module
    ) -> None:
        """Save the model's weights when ``value`` beats every complete trial."""
        study = trial.study
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        values = [t.value for t in complete if t.value is not None]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        best = max(values, default=None) if maximize else min(values, default=None)
        if best is not None and (value <= best if maximize else value >= best):
            return
        folder = self.directory / "weights" / study.study_name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"trial-{trial.number:06d}.pt"
        partial = target.with_suffix(".pt.partial")
        torch.save(
            {k: v.detach().cpu() for k, v in model.state_dict().items()}, partial
        )
        os.replace(partial, target)
        # Only the best weights are kept, so the folder does not grow by a
        # model per trial.
        for other in folder.glob("trial-*.pt"):
            if other != target:
                other.unlink(missing_ok=True)
