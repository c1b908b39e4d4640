"""The Avalanche logger that writes a MIND run to W&B, and what starting its W&B run needs.

Why a class of our own: Avalanche 0.6.0's ``WandBLogger`` calls
``wandb.util.generate_id`` and ``wandb.viz.CustomChart``, which wandb 0.31
removed. This one keeps its interface and adds MIND's quantities (what they are:
:mod:`avalanche_mind.logging.wandb_quantities`); it decides when each is logged.
"""
from __future__ import annotations

import os
import socket
import urllib.parse
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from avalanche.evaluation.metric_results import AlternativeValues, TensorImage
from avalanche.logging import WandBLogger
from matplotlib.figure import Figure
from PIL.Image import Image

from avalanche_mind.logging.accuracy_matrix import AccuracyMatrix
from avalanche_mind.logging.progress import EpochLoss, current_lr
from avalanche_mind.logging.wandb_quantities import (
    AXES,
    EXP_METRIC,
    capacity_row,
    epoch_row,
    is_mind,
    matrix_row,
    run_config,
    teacher_rows,
)
from avalanche_mind.settings import WANDB_MODES

if TYPE_CHECKING:
    from avalanche_mind.core.strategy import MIND



def _generate_run_id(wandb_module) -> str:
    util = getattr(wandb_module, "util", None)
    if util is not None and hasattr(util, "generate_id"):
        return util.generate_id()
    try:
        from wandb.sdk.lib.runid import generate_id

        return generate_id()
    except ImportError:  # pragma: no cover - very old or very new wandb
        return uuid.uuid4().hex[:8]


def check_wandb_reachable(mode: Optional[str], timeout: float = 5.0) -> None:
    """In online mode, fail in seconds when the W&B server cannot be reached (wandb itself waits ~100 s).

    The server is ``WANDB_BASE_URL`` (default https://api.wandb.ai); offline and
    disabled modes need no network and are not checked.
    """
    mode = mode or os.environ.get("WANDB_MODE") or "online"
    if mode not in ("online", "run"):
        return
    url = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise ValueError(
            f"W&B online mode cannot reach {url.scheme}://{url.hostname}:{port} ({error.strerror or error}): "
            "log offline with --wandb-mode offline (and upload later with `wandb sync <run folder>`), "
            "or turn logging off with --wandb-mode disabled"
        ) from error


class MINDWandBLogger(WandBLogger):
    """Avalanche's ``WandBLogger``, working with current wandb, plus MIND's own quantities.

    :param project: W&B project. ``entity``: team or user (default: wandb's).
    :param run_name: the run's display name. ``tags``: list of tags.
    :param mode: "online", "offline" (no network; sync later with ``wandb sync``)
        or "disabled" (nothing written). Default: ``$WANDB_MODE`` or online.
    :param dir: folder under which wandb writes its ``wandb/`` run folders.
    :param config: extra configuration (e.g. the benchmark's); MIND's
        hyperparameters and the model's size are added when training starts.
    :param log_artifacts: as Avalanche's (model checkpoints via ``WeightCheckpoint``).
    :param params: any other ``wandb.init`` keyword arguments.
    """

    def __init__(
        self,
        project: str = "avalanche-mind",
        entity: Optional[str] = None,
        run_name: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        mode: Optional[str] = None,
        dir: Union[str, os.PathLike, None] = None,
        config: Optional[Mapping[str, Any]] = None,
        group: Optional[str] = None,
        notes: Optional[str] = None,
        log_artifacts: bool = False,
        params: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if mode is not None and mode not in WANDB_MODES:
            raise ValueError(f"mode must be one of {WANDB_MODES}, got {mode!r}")
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        init_params: Dict[str, Any] = {"reinit": "finish_previous"}
        for key, value in (("entity", entity), ("tags", list(tags) if tags else None), ("mode", mode),
                           ("group", group), ("notes", notes)):
            if value is not None:
                init_params[key] = value
        init_params.update(params or {})
        self.run = None
        self._trained = 0
        self._teacher_epoch = 0
        self._distill_epoch = 0
        self._epoch_loss = EpochLoss()
        self._epoch_lr = float("nan")
        self._in_training = False
        self._pending: Dict[tuple, float] = {}
        self.matrices: Dict[str, Dict[str, AccuracyMatrix]] = {}
        """``matrices[stream][kind]``: the accuracy matrices seen so far (kind: TAg, TAw, TaskId)."""
        self._n_eval_exps: Dict[str, int] = {}
        super().__init__(
            project_name=project,
            run_name=run_name,
            log_artifacts=log_artifacts,
            save_code=False,
            config=dict(config or {}),
            dir=str(dir) if dir is not None else None,
            params=init_params,
        )

    # ------------------------------------------------------------ wandb run
    def before_run(self) -> None:
        """Start the W&B run (Avalanche's version calls the removed ``wandb.util.generate_id``)."""
        if self.wandb is None:
            self.import_wandb()
        if self.init_kwargs is None:
            self.init_kwargs = {}
        check_wandb_reachable(self.init_kwargs.get("mode"))
        run_id = self.init_kwargs.get("id") or os.environ.get("WANDB_RUN_ID") or _generate_run_id(self.wandb)
        self.init_kwargs["id"] = run_id
        self.run = self.wandb.init(**self.init_kwargs)
        label = getattr(self.run, "_label", None)
        if callable(label):
            try:
                label(repo="Avalanche")
            except Exception:  # a telemetry nicety; never fail a run for it
                pass
        self._define_axes()

    def _define_axes(self) -> None:
        try:
            for axis in set(AXES.values()) | {"trainer/iteration"}:
                self.run.define_metric(axis, hidden=True)
            for pattern, axis in AXES.items():
                self.run.define_metric(pattern, step_metric=axis)
        except Exception:  # disabled runs and older servers may not support it
            pass

    @property
    def run_dir(self) -> Optional[Path]:
        """The local folder of this run (``.../wandb/offline-run-...``), if any."""
        directory = getattr(self.run, "dir", None) if self.run is not None else None
        return Path(directory).parent if directory else None

    def finish(self) -> None:
        """Flush and close the W&B run (also done by wandb at interpreter exit)."""
        if self.run is not None:
            self.run.finish()

    def _log(self, values: Mapping[str, Any]) -> None:
        if values and self.run is not None:
            self.run.log(dict(values))

    # ------------------------------------------------------ checkpointing
    def state_dict(self) -> Dict[str, Any]:
        """Counters and accuracy matrices, so a resumed run continues them (see avalanche_mind.io.checkpoint)."""
        return {
            "trained": self._trained,
            "teacher_epoch": self._teacher_epoch,
            "distill_epoch": self._distill_epoch,
            "exp_count": int(self.exp_count),
            "n_eval_exps": dict(self._n_eval_exps),
            "matrices": {
                stream: {kind: {int(r): {int(c): v for c, v in row.items()} for r, row in m.values.items()}
                         for kind, m in kinds.items()}
                for stream, kinds in self.matrices.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._trained = int(state["trained"])
        self._teacher_epoch = int(state["teacher_epoch"])
        self._distill_epoch = int(state["distill_epoch"])
        self.exp_count = int(state["exp_count"])
        self._n_eval_exps = {k: int(v) for k, v in state["n_eval_exps"].items()}
        self.matrices = {
            stream: {
                kind: AccuracyMatrix({int(r): {int(c): float(v) for c, v in row.items()} for r, row in values.items()})
                for kind, values in kinds.items()
            }
            for stream, kinds in state["matrices"].items()
        }

    # -------------------------------------------------------- Avalanche API
    def _convert(self, value: Any) -> Any:
        """A value wandb can log, or None (Avalanche's rules, minus ``wandb.viz``)."""
        chart = getattr(getattr(self.wandb, "plot", None), "CustomChart", None)
        supported = tuple(t for t in (Image, torch.Tensor, TensorImage, Figure, float, int, chart) if t is not None)
        if isinstance(value, AlternativeValues):
            value = value.best_supported_value(*supported)
        if value is None or not isinstance(value, supported):
            return None
        if isinstance(value, Image):
            return self.wandb.Image(value)
        if isinstance(value, TensorImage):
            return self.wandb.Image(np.array(value))
        if isinstance(value, torch.Tensor):
            return self.wandb.Histogram(np_histogram=np.histogram(value.detach().cpu().view(-1).numpy()))
        return value

    def _values_of(self, name: str, value: Any, x_plot: int) -> Dict[str, Any]:
        self.step = x_plot
        if name.startswith("WeightCheckpoint"):
            if self.log_artifacts:
                self._log_checkpoint(name, value, x_plot)
            return {}
        match = EXP_METRIC.match(name)
        if match and isinstance(value, (int, float)):
            self._pending[(match["stream"], match["kind"], int(match["exp"]))] = float(value)
        converted = self._convert(value)
        return {} if converted is None else {name: converted}

    def log_single_metric(self, name, value, x_plot) -> None:
        row = self._values_of(name, value, x_plot)
        if row:
            self._log({**row, "trainer/iteration": x_plot, "trainer/experience": self._trained})

    def log_metrics(self, metric_values) -> None:
        """Log all the metric values of one callback as one W&B row."""
        row: Dict[str, Any] = {}
        x_plot = None
        for mval in metric_values:
            items = mval.value.items() if isinstance(mval.value, dict) else [(None, mval.value)]
            for key, value in items:
                name = mval.name if key is None else f"{mval.name}/{key}"
                row.update(self._values_of(name, value, mval.x_plot))
                x_plot = mval.x_plot
        if row:
            self._log({**row, "trainer/iteration": x_plot, "trainer/experience": self._trained})

    # ------------------------------------------------------ MIND quantities
    def before_training(self, strategy: "MIND", *args, **kwargs) -> None:
        self._in_training = True
        if self.run is None or not hasattr(strategy, "ownership"):
            return
        self.run.config.update(run_config(strategy), allow_val_change=True)

    def after_training(self, strategy: "MIND", *args, **kwargs) -> None:
        self._in_training = False

    def before_training_exp(self, strategy: "MIND", *args, **kwargs) -> None:
        # MIND trains the teacher before any plugin's before_training_exp (its
        # check_model_and_optimizer step): the per-epoch losses are ready.
        if not is_mind(strategy):
            return
        for row in teacher_rows(strategy, self._teacher_epoch):
            self._log(row)
            self._teacher_epoch += 1

    def before_training_epoch(self, strategy: "MIND", *args, **kwargs) -> None:
        self._epoch_loss.reset()
        self._epoch_lr = current_lr(strategy)

    def after_training_iteration(self, strategy: "MIND", *args, **kwargs) -> None:
        self._epoch_loss.update(strategy)

    def after_training_epoch(self, strategy: "MIND", *args, **kwargs) -> None:
        # MIND's training loop is its distillation phase; another strategy's is plain training.
        phase = "distillation" if is_mind(strategy) else "train"
        task = getattr(strategy, "current_task", self._trained)
        self._log(epoch_row(phase, self._epoch_loss.mean, self._epoch_lr, task, strategy.clock.train_exp_epochs,
                            self._distill_epoch))
        self._distill_epoch += 1

    def after_training_exp(self, strategy: "MIND", *args, **kwargs) -> None:
        # Avalanche's version also re-logs every metric value (already logged by
        # log_metrics): this one logs each once.
        self._trained = getattr(getattr(strategy, "state", None), "n_tasks", self._trained + 1)
        row: Dict[str, Any] = {"TrainingExperience": self.exp_count, "trainer/experience": self._trained}
        ownership = getattr(strategy, "ownership", None)
        if ownership is not None:
            row.update(capacity_row(ownership))
        self._log(row)
        self.exp_count += 1

    def before_eval(self, strategy: "MIND", *args, **kwargs) -> None:
        self._pending = {}

    def after_eval(self, strategy: "MIND", *args, **kwargs) -> None:
        """File this evaluation's per-experience accuracies as row ``n_trained - 1`` and log the matrices."""
        if self._in_training or not self._pending:
            self._pending = {}
            return
        row_index = getattr(getattr(strategy, "state", None), "n_tasks", self._trained) - 1
        if row_index < 0:
            self._pending = {}
            return
        streams = sorted({stream for stream, _, _ in self._pending})
        for (stream, kind, exp), value in self._pending.items():
            self.matrices.setdefault(stream, {}).setdefault(kind, AccuracyMatrix()).set(row_index, exp, value)
            self._n_eval_exps[stream] = max(self._n_eval_exps.get(stream, 0), exp + 1)
        self._pending = {}
        for stream in streams:
            kinds = [k for k in ("TAg", "TAw", "TaskId") if k in self.matrices.get(stream, {})]
            arrays = {k: self.accuracy_matrix(k, stream) for k in kinds}
            self._log(matrix_row(self.wandb, stream, arrays, self._n_eval_exps[stream], row_index))

    def accuracy_matrix(self, kind: str = "TAg", stream: str = "test") -> np.ndarray:
        """The accuracy matrix so far (rows: after training experience i; columns: test experience j)."""
        matrix = self.matrices.get(stream, {}).get(kind)
        return matrix.array(self._n_eval_exps.get(stream)) if matrix is not None else np.zeros((0, 0))


__all__ = ["MINDWandBLogger", "WANDB_MODES", "check_wandb_reachable"]
