"""A missing data set's error: raised within seconds, naming the files, where to put them and the URL.

Why: Avalanche downloads a missing dataset on first use; without a network that
ends, after a long wait, in a stack trace from deep inside ``urllib``. The
pieces here (a quick probe of the download host, the error, its instructions,
and the same error for a download that fails) let :mod:`avalanche_mind.data.real`
fail fast and clearly instead.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from avalanche_mind.data.dataset_files import DatasetFiles

#: Seconds to wait for the download host before declaring the network unreachable.
PROBE_TIMEOUT = 3.0


class DatasetNotAvailableError(FileNotFoundError):
    """The dataset is not on disk and cannot be downloaded now."""


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True if a TCP connection to ``url``'s host opens within ``timeout`` seconds.

    Runs in a daemon thread so that a hanging DNS lookup (which ignores socket
    timeouts) cannot hold the caller longer than ``timeout``.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def instructions(files: DatasetFiles, root: Path) -> str:
    """Where to put the files (every accepted layout under ``root``) and where to download them."""
    urls = "\n".join(f"  {u}" for u in files.urls)
    return (
        f"Put one of these layouts there:\n{files.describe(root)}\n"
        f"Download from:\n{urls}\n{files.note}"
    )


@contextlib.contextmanager
def download_errors(files: DatasetFiles, root: Path, downloading: bool) -> Iterator[None]:
    """Turn a failed download into the same clear error.

    Two cases: the files were absent and the transfer failed (host up); or the
    files were found but the loader rejected them and fell back on a download that
    failed (torchvision compares each CIFAR file's md5 with the official one and
    downloads the archive again on a mismatch, which offline ends in a ``URLError``).
    """
    try:
        yield
    except (OSError, RuntimeError) as error:
        if isinstance(error, DatasetNotAvailableError):
            raise
        if downloading:
            raise DatasetNotAvailableError(
                f"Downloading {files.name} into {root} failed ({error}).\n"
                + instructions(files, root)
            ) from error
        if not is_download_failure(error):
            raise
        raise DatasetNotAvailableError(
            f"{files.name} was found under {root} but could not be loaded: the loader rejected "
            f"the files (incomplete, or not the official ones: it checks their checksums) and "
            f"the download it fell back on failed ({error}).\n" + instructions(files, root)
        ) from error


def is_download_failure(error: BaseException) -> bool:
    """True for the network errors a download raises (``urllib``, sockets, HTTP)."""
    from urllib.error import URLError

    return isinstance(error, (URLError, ConnectionError, TimeoutError, socket.gaierror))


__all__ = ["PROBE_TIMEOUT", "DatasetNotAvailableError", "download_errors", "host_reachable", "instructions",
           "is_download_failure"]
