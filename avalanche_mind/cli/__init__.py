"""The ``avalanche-mind`` command: ``train``, ``evaluate``, ``compare`` and ``export``.

::

    avalanche-mind train --benchmark glyphs --checkpoint runs/glyphs.pt --wandb --wandb-mode offline
    avalanche-mind train --benchmark glyphs --checkpoint runs/glyphs.pt --resume   # after an interruption
    avalanche-mind evaluate runs/glyphs.pt
    avalanche-mind compare --help
    avalanche-mind export runs/glyphs.pt --format onnx --task all --out mind.onnx

``avalanche-mind <command> --help`` explains every option. ``compare`` is the
package's comparison runner (:mod:`avalanche_mind.runner`), with its own options.
A command's module is imported only when the command runs: the parsers and their help
need neither torch nor Avalanche, so ``--help`` answers at once.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from avalanche_mind.cli.options import PROG
from avalanche_mind.cli.parser import COMMAND_HELP, build_parser
from avalanche_mind.errors import CheckpointError, TrainingDivergedError
from avalanche_mind.preflight import CLIError


def _run(command: str, args) -> int:
    """Run ``command`` on its parsed ``args``; its module (torch, Avalanche) is imported only now."""
    if command == "train":
        from avalanche_mind.cli.train import cmd_train as run
    elif command == "evaluate":
        from avalanche_mind.cli.evaluate import cmd_evaluate as run
    else:
        from avalanche_mind.cli.export import run_export as run
    return run(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``avalanche-mind`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":  # the runner parses (and explains) its own options
        from avalanche_mind.runner.compare import main as compare

        return int(compare(argv[1:]) or 0)
    # Only the named command's options are built: `avalanche-mind --help` reads no command module.
    args = build_parser(commands=[argv[0]] if argv and argv[0] in COMMAND_HELP else []).parse_args(argv)
    args.argv = argv
    try:
        return _run(args.command, args)
    except (CLIError, CheckpointError, FileNotFoundError, ValueError) as error:
        # User errors (bad option values, unknown names, missing or mismatched files,
        # missing data sets) are reported as one line; the library raises ValueError
        # for those by convention.
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDivergedError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1


__all__ = ["build_parser", "main"]
