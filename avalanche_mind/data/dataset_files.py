"""The files each real data set needs on disk, in the forms Avalanche (or torchvision) accepts.

Written out rather than imported because importing Avalanche alone takes about
ten seconds; the names mirror Avalanche 0.6.0 / torchvision (the tests check them
against the installed libraries).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path


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

__all__ = ["CIFAR100_FILES", "CORE50_FILES", "MNIST_FILES", "TINY_IMAGENET_FILES", "DatasetFiles"]
