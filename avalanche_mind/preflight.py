"""Checks made before any training, so that a run cannot fail at its end on a path or a device given at its start.

Used by every command (``train``, ``evaluate``, ``compare``); a failed check is a
:class:`CLIError`, reported as one line without a traceback. Also the commands' parser and
help formatter; nothing here needs torch at import, so that ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
from pathlib import Path


class CLIError(Exception):
    """A user error reported as one line, without a traceback."""


class WholeNamesFormatter(argparse.HelpFormatter):
    """argparse's help, never breaking a line at a hyphen: the names it lists (glyphs-domain, mind-paper) stay whole."""

    def _split_lines(self, text: str, width: int):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors in one line, naming ``--help`` instead of printing the usage (exit status 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_writable(path, option: str, *, folder: bool = False) -> None:
    """Raise :class:`CLIError` now, before any training, if ``path`` (a file, or a ``folder``) cannot be written."""
    path = Path(path)
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise CLIError(f"{option} {path} is a folder; give a file path")
    if folder and path.exists() and not path.is_dir():
        raise CLIError(f"{option} {path} is a file, not a folder")
    where = where.absolute()
    existing = next((a for a in [where, *where.parents] if a.exists()), where.anchor)
    if not Path(existing).is_dir():
        raise CLIError(f"{option} {path} cannot be written: {existing} is a file, not a folder. "
                       "(Checked before training, so no work is lost.)")
    try:  # a probe file in the nearest existing folder; nothing is created for good
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".avalanche-mind-write-check.")
        os.close(fd)
        os.unlink(probe)
        if not folder and path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as error:
        raise CLIError(
            f"{option} {path} cannot be written ({error.strerror or error}); choose a writable location. "
            "(Checked before training, so no work is lost.)"
        ) from None


def check_device(device: str, option: str = "--device") -> None:
    """Raise :class:`CLIError` if torch cannot use ``device`` (unknown name, no GPU)."""
    import torch  # here, not at the top: the parsers import this module, and their help needs no torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"{option} {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"{option} {device}: torch sees no CUDA GPU on this machine "
                           "(torch.cuda.is_available() is False); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise CLIError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                           f"numbered from 0")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"{option} {device}: MPS is not available on this machine; use --device cpu")
