"""Weights & Biases logging for MIND, and the ``--wandb`` command-line options.

:class:`MINDWandBLogger` is Avalanche's ``WandBLogger`` made to work with current
wandb (0.31 removed ``wandb.util.generate_id`` and ``wandb.viz.CustomChart``,
which Avalanche 0.6.0 calls in its constructor). It is used like any Avalanche
logger, inside an ``EvaluationPlugin``::

    logger = MINDWandBLogger(project="mind", mode="offline", config={"benchmark": "glyphs"})
    strategy = MIND(model, n_experiences=10, evaluator=mind_evaluator(logger))
    ...
    logger.finish()

Besides every metric the ``EvaluationPlugin`` emits (TAg/TAw/TaskId accuracy,
forgetting, loss), it logs MIND's own quantities: the configuration, the
teacher and distillation loss curves (``teacher/loss``, ``distillation/loss``;
``train/loss`` for a strategy other than MIND), the capacity used per layer
(``capacity/<layer>``), and after every evaluation the accuracy matrix (rows:
after training experience i; columns: test experience j) as a table and a
heatmap, with the TAg/TAw forgetting read from it.

W&B's own step counts log calls; each row carries its x axis as a key
(``trainer/experience``, ``trainer/iteration``, ``epoch/teacher``,
``epoch/distillation``), declared with ``define_metric`` so the charts use it.

This module is where the rest of the package and users import these names from;
they live in :mod:`~avalanche_mind.logging.wandb_avalanche_logger` (the logger
class: when to log), :mod:`~avalanche_mind.logging.wandb_quantities` (MIND's
quantities: what is logged) and :mod:`~avalanche_mind.logging.wandb_options`
(the command-line options).
"""
from __future__ import annotations

from avalanche_mind.logging.wandb_avalanche_logger import WANDB_MODES, MINDWandBLogger, check_wandb_reachable
from avalanche_mind.logging.wandb_options import add_wandb_arguments, check_wandb_names, wandb_logger_from_args

__all__ = [
    "MINDWandBLogger",
    "WANDB_MODES",
    "add_wandb_arguments",
    "check_wandb_names",
    "check_wandb_reachable",
    "wandb_logger_from_args",
]
