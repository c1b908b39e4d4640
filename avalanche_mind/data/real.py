"""The paper's real benchmarks, built by Avalanche's own classes; a fast, clear error offline.

Why: Avalanche downloads a missing dataset on first use; without a network that
ends, after a long wait, in a stack trace from deep inside ``urllib``. Here we
first look for the files Avalanche (or torchvision) would read; if they are
missing and the download host does not answer within seconds, we raise
:class:`DatasetNotAvailableError`, naming the files, where to put them and the URL.
The file names below mirror Avalanche 0.6.0 / torchvision; they are written out
rather than imported because importing Avalanche alone takes about ten seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union
from urllib.parse import urlsplit

PathLike = Union[str, Path]

#: Seconds to wait for the download host before declaring the network unreachable.
PROBE_TIMEOUT = 3.0


class DatasetNotAvailableError(FileNotFoundError):
    """The dataset is not on disk and cannot be downloaded now."""


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    """What a dataset needs under its root, in the forms Avalanche accepts.

    ``layouts`` are alternatives (any one complete layout will do); a layout is a
    list of requirements that must all hold; a requirement is a tuple of relative
    paths of which any one may exist (e.g. an extracted file or its archive).
    """

    name: str
    layouts: tuple[tuple[tuple[str, ...], ...], ...]
    urls: tuple[str, ...]
    note: str = ""

    def present(self, root: Path) -> bool:
        return any(
            all(any((root / p).exists() for p in requirement) for requirement in layout)
            for layout in self.layouts
        )

    def describe(self, root: Path) -> str:
        lines = []
        for k, layout in enumerate(self.layouts, 1):
            parts = [" or ".join(str(root / p) for p in req) for req in layout]
            lines.append(f"  layout {k}:\n" + "\n".join(f"    - {p}" for p in parts))
        return "\n".join(lines)


def _each(*paths: str) -> tuple[tuple[str, ...], ...]:
    """A layout whose every path is required, with no alternative."""
    return tuple((p,) for p in paths)


# torchvision.datasets.CIFAR100: base_folder, train_list/test_list/meta, filename, url.
CIFAR100_FILES = DatasetFiles(
    name="CIFAR-100",
    layouts=(
        _each("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
        _each("cifar-100-python.tar.gz"),
    ),
    urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
    note="torchvision extracts the archive itself.",
)

# avalanche.benchmarks.datasets.TinyImagenet: filename, data_folder and the files it reads.
TINY_IMAGENET_FILES = DatasetFiles(
    name="Tiny ImageNet",
    layouts=(
        _each(
            "tiny-imagenet-200/wnids.txt",
            "tiny-imagenet-200/train",
            "tiny-imagenet-200/val/images",
            "tiny-imagenet-200/val/val_annotations.txt",
        ),
        _each("tiny-imagenet-200.zip"),
    ),
    urls=("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
    note="Avalanche extracts the archive itself.",
)

# avalanche.benchmarks.datasets.core50.core50_data.data and CORe50Dataset._load_metadata.
_CORE50_PKLS = ("paths.pkl", "LUP.pkl", "labels.pkl", "labels2names.pkl")
CORE50_FILES = DatasetFiles(
    name="CORe50",
    layouts=(
        _each("core50_128x128", "batches_filelists", *_CORE50_PKLS),
        _each(
            "core50_128x128.zip",
            "batches_filelists.zip",
            "batches_filelists_NICv2.zip",
            *_CORE50_PKLS,
        ),
    ),
    urls=(
        "http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip",
        "https://vlomonaco.github.io/core50/data/batches_filelists.zip",
        "https://vlomonaco.github.io/core50/data/batches_filelists_NICv2.zip",
        "https://vlomonaco.github.io/core50/data/paths.pkl",
        "https://vlomonaco.github.io/core50/data/LUP.pkl",
        "https://vlomonaco.github.io/core50/data/labels.pkl",
        "https://vlomonaco.github.io/core50/data/labels2names.pkl",
    ),
    note="Layout 1 is the zips extracted in place; with layout 2 Avalanche extracts them.",
)

# avalanche's TensorMNIST (torchvision MNIST with raw_folder <root>/MNIST/raw).
_MNIST_RAW = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_FILES = DatasetFiles(
    name="MNIST",
    layouts=(tuple((f"MNIST/raw/{f}", f"MNIST/raw/{f}.gz") for f in _MNIST_RAW),),
    urls=tuple(f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}.gz" for f in _MNIST_RAW),
    note="Each file may be given extracted or as its .gz; torchvision extracts it.",
)


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


def ensure_available(files: DatasetFiles, root: Path, download: bool = True) -> bool:
    """Raise fast unless Avalanche can load ``files`` from ``root`` or download them.

    Returns True when a download is ahead (the files are absent, the host answers).
    """
    if files.present(root):
        return False
    if download and host_reachable(files.urls[0]):
        return True
    why = (
        "downloading is disabled (download=False)"
        if not download
        else f"{urlsplit(files.urls[0]).hostname} cannot be reached (no network?)"
    )
    raise DatasetNotAvailableError(
        f"{files.name} was not found under {root} and {why}.\n" + _instructions(files, root)
    )


def _instructions(files: DatasetFiles, root: Path) -> str:
    urls = "\n".join(f"  {u}" for u in files.urls)
    return (
        f"Put one of these layouts there:\n{files.describe(root)}\n"
        f"Download from:\n{urls}\n{files.note}"
    )


@contextlib.contextmanager
def _download_errors(files: DatasetFiles, root: Path, downloading: bool) -> Iterator[None]:
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
                + _instructions(files, root)
            ) from error
        if not _is_download_failure(error):
            raise
        raise DatasetNotAvailableError(
            f"{files.name} was found under {root} but could not be loaded: the loader rejected "
            f"the files (incomplete, or not the official ones: it checks their checksums) and "
            f"the download it fell back on failed ({error}).\n" + _instructions(files, root)
        ) from error


def _is_download_failure(error: BaseException) -> bool:
    """True for the network errors a download raises (``urllib``, sockets, HTTP)."""
    from urllib.error import URLError

    return isinstance(error, (URLError, ConnectionError, TimeoutError, socket.gaierror))


def _root(data_root: Optional[PathLike], default_name: str) -> Path:
    """``data_root`` as a Path, or Avalanche's default location for the dataset."""
    if data_root is not None:
        # A Path, never a bare str: Avalanche reads a str without "/" as a dataset name.
        return Path(data_root).expanduser().resolve()
    from avalanche.benchmarks.datasets import default_dataset_location

    return Path(default_dataset_location(default_name))


# ------------------------------------------------------------------- benchmarks
def split_cifar100(
    data_root: Optional[PathLike] = None,
    n_experiences: int = 10,
    seed: int = 0,
    *,
    download: bool = True,
    **kwargs: Any,
):
    """CIFAR-100 in ``n_experiences`` class-incremental experiences (``SplitCIFAR100``)."""
    root = _root(data_root, "cifar100")
    downloading = ensure_available(CIFAR100_FILES, root, download)
    from avalanche.benchmarks.classic import SplitCIFAR100

    with _download_errors(CIFAR100_FILES, root, downloading):
        return SplitCIFAR100(n_experiences, seed=seed, dataset_root=root, **kwargs)


def split_tiny_imagenet(
    data_root: Optional[PathLike] = None,
    n_experiences: int = 10,
    seed: int = 0,
    *,
    download: bool = True,
    **kwargs: Any,
):
    """Tiny ImageNet (200 classes, 64x64), class-incremental (``SplitTinyImageNet``)."""
    root = _root(data_root, "tinyimagenet")
    downloading = ensure_available(TINY_IMAGENET_FILES, root, download)
    from avalanche.benchmarks.classic import SplitTinyImageNet

    with _download_errors(TINY_IMAGENET_FILES, root, downloading):
        return SplitTinyImageNet(n_experiences, seed=seed, dataset_root=root, **kwargs)


def core50_domain(
    data_root: Optional[PathLike] = None,
    *,
    run: int = 0,
    image_size: Optional[int] = 64,
    object_lvl: bool = True,
    download: bool = True,
    **kwargs: Any,
):
    """CORe50 NI: the 8 training sessions are the domains, all 50 objects in each.

    Avalanche's ``CORe50(scenario="ni")``: its test stream is one experience, the
    three held-out sessions. Images are resized to ``image_size`` (64, the
    paper's setting; None keeps 128x128) before Avalanche's normalisation, unless
    ``train_transform``/``eval_transform`` are given.
    """
    root = _root(data_root, "core50")
    downloading = ensure_available(CORE50_FILES, root, download)
    from avalanche.benchmarks.classic import CORe50

    if image_size is not None:
        from torchvision import transforms as T

        normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        resize = T.Resize(image_size)
        kwargs.setdefault(
            "train_transform",
            T.Compose([resize, T.ToTensor(), T.RandomHorizontalFlip(), normalize]),
        )
        kwargs.setdefault("eval_transform", T.Compose([resize, T.ToTensor(), normalize]))
    with _download_errors(CORE50_FILES, root, downloading):
        return CORe50(scenario="ni", run=run, object_lvl=object_lvl, dataset_root=root, **kwargs)


def rotated_mnist(
    data_root: Optional[PathLike] = None,
    n_experiences: int = 5,
    seed: int = 0,
    *,
    download: bool = True,
    **kwargs: Any,
):
    """MNIST, each experience rotated by its own random angle (Avalanche's ``RotatedMNIST``)."""
    root = _root(data_root, "mnist")
    downloading = ensure_available(MNIST_FILES, root, download)
    from avalanche.benchmarks.classic import RotatedMNIST

    with _download_errors(MNIST_FILES, root, downloading):
        benchmark = RotatedMNIST(n_experiences, seed=seed, dataset_root=root, **kwargs)
    return _ten_digits(benchmark)


def permuted_mnist(
    data_root: Optional[PathLike] = None,
    n_experiences: int = 5,
    seed: int = 0,
    *,
    download: bool = True,
    **kwargs: Any,
):
    """MNIST, each experience with its own pixel permutation (``PermutedMNIST``)."""
    root = _root(data_root, "mnist")
    downloading = ensure_available(MNIST_FILES, root, download)
    from avalanche.benchmarks.classic import PermutedMNIST

    with _download_errors(MNIST_FILES, root, downloading):
        benchmark = PermutedMNIST(n_experiences, seed=seed, dataset_root=root, **kwargs)
    return _ten_digits(benchmark)


def _ten_digits(benchmark):
    """Avalanche counts each experience's relabelled digits as new classes (10 x
    n_experiences); every experience holds the same 10, so a model needs 10 outputs."""
    benchmark.n_classes = 10
    return benchmark


# -------------------------------------------------------------------- registry
def _glyph_root(data_root: Optional[PathLike]) -> Optional[Path]:
    """``<data_root>/glyphs``, next to the real datasets (None: the glyph default)."""
    return None if data_root is None else Path(data_root).expanduser() / "glyphs"


def glyphs(data_root: Optional[PathLike] = None, **kwargs: Any):
    """Registry adapter: :func:`glyph_class_incremental`, cached in ``<data_root>/glyphs``."""
    from avalanche_mind.data.glyphs import glyph_class_incremental

    return glyph_class_incremental(root=_glyph_root(data_root), **kwargs)


def glyphs_domain(data_root: Optional[PathLike] = None, **kwargs: Any):
    """Registry adapter: :func:`glyph_domain_incremental`, cached in ``<data_root>/glyphs``."""
    from avalanche_mind.data.glyphs import glyph_domain_incremental

    return glyph_domain_incremental(root=_glyph_root(data_root), **kwargs)


def glyphs_permuted(data_root: Optional[PathLike] = None, **kwargs: Any):
    """Registry adapter: :func:`glyph_permuted`, cached in ``<data_root>/glyphs``."""
    from avalanche_mind.data.glyphs import glyph_permuted

    return glyph_permuted(root=_glyph_root(data_root), **kwargs)


def glyphs_rotated(data_root: Optional[PathLike] = None, **kwargs: Any):
    """Registry adapter: :func:`glyph_rotated`, cached in ``<data_root>/glyphs``."""
    from avalanche_mind.data.glyphs import glyph_rotated

    return glyph_rotated(root=_glyph_root(data_root), **kwargs)


def glyphs_shift(data_root: Optional[PathLike] = None, **kwargs: Any):
    """Registry adapter: :func:`glyph_shift`, cached in ``<data_root>/glyphs``."""
    from avalanche_mind.data.glyphs import glyph_shift

    return glyph_shift(root=_glyph_root(data_root), **kwargs)


#: Every builder takes ``data_root`` first and keyword arguments after it.
BENCHMARKS: dict[str, Callable[..., Any]] = {
    "glyphs": glyphs,
    "glyphs-domain": glyphs_domain,
    "glyphs-permuted": glyphs_permuted,
    "glyphs-rotated": glyphs_rotated,
    "glyphs-shift": glyphs_shift,
    "cifar100": split_cifar100,
    "tinyimagenet": split_tiny_imagenet,
    "core50": core50_domain,
    "rotated-mnist": rotated_mnist,
    "permuted-mnist": permuted_mnist,
}


def load_benchmark(name: str, data_root: Optional[PathLike] = None, **kwargs: Any):
    """Build the benchmark registered as ``name`` (see :data:`BENCHMARKS`)."""
    if name not in BENCHMARKS:
        raise ValueError(
            f"Unknown benchmark {name!r}; valid names are: {', '.join(sorted(BENCHMARKS))}."
        )
    return BENCHMARKS[name](data_root, **kwargs)


__all__: Sequence[str] = (
    "BENCHMARKS",
    "DatasetNotAvailableError",
    "core50_domain",
    "load_benchmark",
    "permuted_mnist",
    "rotated_mnist",
    "split_cifar100",
    "split_tiny_imagenet",
)
