"""The ``--wandb`` command-line options, shared by every script, and the logger they ask for.

One option group, one name check and one factory, so ``avalanche-mind train``,
the comparison runner and the examples log to W&B the same way. The options need
neither torch nor Avalanche (the logger is imported when one is made), so help is fast.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from avalanche_mind.settings import WANDB_MODES

if TYPE_CHECKING:
    from avalanche_mind.logging.wandb_avalanche_logger import MINDWandBLogger


def add_wandb_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the ``--wandb`` option group (project, entity, run name, tags, mode, dir) to ``parser``."""
    group = parser.add_argument_group(
        "Weights & Biases", "Log configuration, metrics, loss curves, accuracy matrices and capacity to W&B."
    )
    group.add_argument("--wandb", action="store_true", help="log the run to Weights & Biases")
    group.add_argument("--wandb-project", default="avalanche-mind", metavar="NAME",
                       help="W&B project (default: %(default)s)")
    group.add_argument("--wandb-entity", default=None, metavar="NAME",
                       help="W&B team or user (default: your default entity)")
    group.add_argument("--wandb-run-name", default=None, metavar="NAME",
                       help="display name of the run (default: generated)")
    group.add_argument("--wandb-tags", nargs="*", default=[], metavar="TAG", help="tags of the run")
    group.add_argument(
        "--wandb-mode",
        choices=WANDB_MODES,
        default=None,
        help="online; offline (no network, sync later with `wandb sync`); disabled. "
        "Default: $WANDB_MODE, else online",
    )
    group.add_argument("--wandb-dir", default=None, metavar="DIR",
                       help="folder for wandb's local files (default: ./wandb)")
    return group


def check_wandb_names(args: argparse.Namespace) -> None:
    """ValueError before any work for a ``--wandb-project`` that W&B refuses (it would fail only at the first run)."""
    project = getattr(args, "wandb_project", None)
    if not getattr(args, "wandb", False) or project is None:
        return
    found = [c for c in "/\\#?%:" if c in project]
    if found or len(project) > 128 or not project.strip():
        hint = ("; a team goes in --wandb-entity: --wandb-entity TEAM --wandb-project PROJECT"
                if "/" in project else "")
        raise ValueError(f"--wandb-project {project!r} is not a W&B project name (1 to 128 characters, none of "
                         f"/ \\ # ? % :){hint}")


def wandb_logger_from_args(
    args: argparse.Namespace, config: Optional[Mapping[str, Any]] = None, **overrides: Any
) -> Optional[MINDWandBLogger]:
    """The logger the ``--wandb`` options ask for, or None when ``--wandb`` is not given.

    ``overrides``: :class:`MINDWandBLogger` arguments that replace the options'
    (e.g. ``run_name`` and ``group`` when one command logs several runs).
    """
    if not getattr(args, "wandb", False):
        return None
    from avalanche_mind.logging.wandb_avalanche_logger import MINDWandBLogger  # Avalanche: only when logging

    kwargs: Dict[str, Any] = dict(
        project=args.wandb_project,
        entity=args.wandb_entity,
        run_name=args.wandb_run_name,
        tags=args.wandb_tags or None,
        mode=args.wandb_mode,
        dir=args.wandb_dir,
        config=config,
    )
    kwargs.update(overrides)
    return MINDWandBLogger(**kwargs)


__all__ = ["add_wandb_arguments", "check_wandb_names", "wandb_logger_from_args"]
