"""How the command line reads its values: ``KEY=VALUE`` lists, epoch lists, and the benchmark options.

MIND's hyperparameters are read under MIND's own names (:class:`avalanche_mind.core.config.MINDConfig`'s
fields); :data:`MIND_OPTIONS` names the three options spelled differently.
"""
from __future__ import annotations

import argparse
import ast
from typing import Any, Dict, List, Optional, Sequence

from avalanche_mind.preflight import CLIError, WholeNamesFormatter
from avalanche_mind.settings import BENCHMARK_NAMES, MODEL_NAMES

PROG = "avalanche-mind"

MIND_OPTIONS = {"train_epochs": "epochs", "train_mb_size": "batch_size", "eval_mb_size": "eval_batch_size"}
"""MIND keyword -> ``train`` option where the names differ; every other option has MIND's name."""


def literal(text: str) -> Any:
    """A Python literal, or the text itself when it is a bare word."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string


def key_values(items: Optional[Sequence[str]], option: str) -> Dict[str, Any]:
    """``KEY=VALUE`` items as keyword arguments (``-`` in keys read as ``_``)."""
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise CLIError(f"{option} expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        out[key.strip().replace("-", "_")] = literal(text)
    return out


def int_list(text: str) -> List[int]:
    """Epochs such as ``35`` or ``70,90`` (``none``: no milestone)."""
    text = text.strip()
    if text in ("", "none", "[]"):
        return []
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 35 or 70,90, got {text!r}")


def formatter(prog: str) -> argparse.HelpFormatter:
    return WholeNamesFormatter(prog, max_help_position=34)


def add_benchmark_arguments(parser: argparse.ArgumentParser, from_checkpoint: bool) -> None:
    """``--benchmark``, ``--benchmark-arg`` and ``--data-root``."""
    group = parser.add_argument_group("benchmark")
    group.add_argument(
        "--benchmark",
        default=None,
        metavar="NAME",
        help="benchmark to use: " + ", ".join(BENCHMARK_NAMES) + ", or package.module:function, your own "
        "function returning an Avalanche benchmark (--benchmark-arg values are its keyword arguments)"
        + (" (default: the one the checkpoint was trained on)" if from_checkpoint else ""),
    )
    group.add_argument(
        "--benchmark-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="keyword argument of the benchmark builder, repeatable; e.g. n_experiences=5, "
        "train_per_class=50, seed=1 (glyphs), n_domains=3 (glyphs-domain)",
    )
    group.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="where datasets are (or are cached/downloaded); default: each benchmark's own location",
    )


def add_recorded_model_arguments(parser) -> None:
    """``--model`` / ``--model-arg`` of a command that reads a checkpoint (the recorded ones by default)."""
    parser.add_argument("--model", choices=MODEL_NAMES, default=None,
                        help="backbone (default: the one recorded in the checkpoint)")
    parser.add_argument("--model-arg", action="append", default=None, metavar="KEY=VALUE",
                        help="keyword argument of the model builder, repeatable (default: recorded ones)")
