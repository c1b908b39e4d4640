"""The paper's real benchmarks, built by Avalanche's own classes; a fast, clear error offline.

Each builder first looks for the files Avalanche (or torchvision) would read
(:mod:`avalanche_mind.data.dataset_files`); if they are missing and the download
host does not answer within seconds, it raises :class:`DatasetNotAvailableError`,
naming the files, where to put them and the URL
(:mod:`avalanche_mind.data.missing_data`), instead of Avalanche's long wait and
``urllib`` stack trace. Avalanche itself is imported only when a builder runs:
importing it alone takes about ten seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union
from urllib.parse import urlsplit

from avalanche_mind.data.dataset_files import (
    CIFAR100_FILES,
    CORE50_FILES,
    MNIST_FILES,
    TINY_IMAGENET_FILES,
    DatasetFiles,
)

# ensure_available calls host_reachable through this module, so replacing real.host_reachable
# (as the tests do) keeps the network out of every builder.
from avalanche_mind.data.missing_data import (  # noqa: F401 (PROBE_TIMEOUT: re-exported)
    PROBE_TIMEOUT,
    DatasetNotAvailableError,
    download_errors,
    host_reachable,
    instructions,
)

PathLike = Union[str, Path]


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
        f"{files.name} was not found under {root} and {why}.\n" + instructions(files, root)
    )


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

    with download_errors(CIFAR100_FILES, root, downloading):
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

    with download_errors(TINY_IMAGENET_FILES, root, downloading):
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
    with download_errors(CORE50_FILES, root, downloading):
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

    with download_errors(MNIST_FILES, root, downloading):
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

    with download_errors(MNIST_FILES, root, downloading):
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
