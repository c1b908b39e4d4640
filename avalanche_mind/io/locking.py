"""One writer per output: a lock file beside a ``--checkpoint`` or ``--out``, so two runs cannot mix their files.

The lock is an ``flock`` on ``.<name>.lock`` beside the output, holding the owner's
pid and command line for the refusal message. The kernel drops an ``flock`` when its
process dies, so a killed run never leaves a lock that blocks the next one; the file
itself is removed on release. Where ``fcntl`` is missing (Windows) nothing is locked.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class OutputBusy(Exception):
    """Another live process writes the same output."""


def lock_path(target: Union[str, os.PathLike]) -> Path:
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


def _describe(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


class OutputLock:
    """Exclusive use of ``target`` (a file or a folder) by this process until :meth:`release`."""

    def __init__(self, target: Union[str, os.PathLike], option: str) -> None:
        self.target = Path(target)
        self.option = option
        self.path = lock_path(target)
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        """Take the lock or raise :class:`OutputBusy` naming the process that holds it."""
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OutputBusy(
                    f"{self.option} {self.target} is being written by {_describe(self.path)}; wait for it to "
                    f"finish or choose another {self.option} (the lock is {self.path}, dropped when that process "
                    "ends)") from None
            try:  # the holder we waited on may have removed the file: lock the one now at the path
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:200]})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["OutputBusy", "OutputLock", "lock_path"]
