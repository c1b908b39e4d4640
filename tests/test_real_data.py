"""Real benchmarks: a fast, clear error offline, the right files expected, Avalanche wired right."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from avalanche_mind.data import real
from avalanche_mind.data.real import (
    BENCHMARKS,
    DatasetNotAvailableError,
    core50_domain,
    load_benchmark,
    permuted_mnist,
    rotated_mnist,
    split_cifar100,
    split_tiny_imagenet,
)

MISSING = [
    (split_cifar100, "cifar-100-python.tar.gz", "www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    (split_tiny_imagenet, "tiny-imagenet-200.zip", "cs231n.stanford.edu/tiny-imagenet-200.zip"),
    (core50_domain, "core50_128x128", "core50_128x128.zip"),
    (rotated_mnist, "MNIST/raw/train-images-idx3-ubyte", "mnist/train-images-idx3-ubyte.gz"),
    (permuted_mnist, "MNIST/raw/t10k-labels-idx1-ubyte", "mnist/t10k-labels-idx1-ubyte.gz"),
]


@pytest.fixture
def offline(monkeypatch):
    """The network probe answers 'unreachable' without touching the network."""
    monkeypatch.setattr(real, "host_reachable", lambda url, timeout=real.PROBE_TIMEOUT: False)


@pytest.mark.parametrize(
    "builder, expected_file, url", MISSING, ids=lambda v: getattr(v, "__name__", None)
)
def test_missing_data_fails_fast_and_says_what_to_do(
    tmp_path, offline, builder, expected_file, url
):
    start = time.perf_counter()
    with pytest.raises(DatasetNotAvailableError) as info:
        builder(tmp_path)
    assert time.perf_counter() - start < 10
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert str(tmp_path / expected_file) in message
    assert url in message
    assert "cannot be reached" in message


def test_download_false_skips_the_probe(tmp_path, monkeypatch):
    def probe(*args, **kwargs):
        raise AssertionError("no probe when download=False")

    monkeypatch.setattr(real, "host_reachable", probe)
    with pytest.raises(DatasetNotAvailableError, match="download=False"):
        split_cifar100(tmp_path, download=False)


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    """Host up but the transfer fails: our error with instructions, the cause chained."""
    import avalanche.benchmarks.classic as classic
    from urllib.error import URLError

    def broken(*args, **kwargs):
        raise URLError("HTTP Error 403: Forbidden")

    monkeypatch.setattr(real, "host_reachable", lambda *a, **k: True)
    monkeypatch.setattr(classic, "SplitCIFAR100", broken)
    with pytest.raises(DatasetNotAvailableError, match="failed.*403") as info:
        split_cifar100(tmp_path)
    assert str(tmp_path / "cifar-100-python.tar.gz") in str(info.value)
    assert isinstance(info.value.__cause__, URLError)


def test_layouts_accept_extracted_files_or_archives(tmp_path):
    def touch(*paths):
        for p in paths:
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).touch()

    assert not real.CIFAR100_FILES.present(tmp_path)
    touch("cifar-100-python/train", "cifar-100-python/test")
    assert not real.CIFAR100_FILES.present(tmp_path)  # meta is still missing
    touch("cifar-100-python/meta")
    assert real.CIFAR100_FILES.present(tmp_path)

    # MNIST: each file extracted or as its .gz, mixed freely.
    touch("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte.gz")
    touch("MNIST/raw/t10k-images-idx3-ubyte.gz")
    assert not real.MNIST_FILES.present(tmp_path)
    touch("MNIST/raw/t10k-labels-idx1-ubyte")
    assert real.MNIST_FILES.present(tmp_path)

    touch("tiny-imagenet-200.zip")
    assert real.TINY_IMAGENET_FILES.present(tmp_path)


def test_probe_is_quick_and_honest():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    open_port = server.getsockname()[1]
    try:
        assert real.host_reachable(f"http://127.0.0.1:{open_port}/x", timeout=2)
    finally:
        server.close()
    start = time.perf_counter()
    assert not real.host_reachable(f"http://127.0.0.1:{open_port}/x", timeout=2)
    assert time.perf_counter() - start < 3


def test_expected_names_match_the_installed_libraries():
    """The hard-coded names (kept to avoid a 10 s import) must follow Avalanche/torchvision."""
    from avalanche.benchmarks.datasets import TinyImagenet
    from avalanche.benchmarks.datasets.core50 import core50_data
    from avalanche.benchmarks.datasets.external_datasets.mnist import TensorMNIST
    from torchvision.datasets import CIFAR100

    listed = CIFAR100.train_list + CIFAR100.test_list
    cifar = [f"{CIFAR100.base_folder}/{name}" for name, _ in listed]
    cifar.append(f"{CIFAR100.base_folder}/{CIFAR100.meta['filename']}")
    assert {p for (p,) in real.CIFAR100_FILES.layouts[0]} == set(cifar)
    assert real.CIFAR100_FILES.layouts[1] == ((CIFAR100.filename,),)
    assert real.CIFAR100_FILES.urls == (CIFAR100.url,)

    assert real.TINY_IMAGENET_FILES.layouts[1] == ((TinyImagenet.filename[0],),)
    assert real.TINY_IMAGENET_FILES.urls == (TinyImagenet.filename[1],)

    assert {p for (p,) in real.CORE50_FILES.layouts[1]} == {name for name, _, _ in core50_data.data}
    assert set(real.CORE50_FILES.urls) == {url for _, url, _ in core50_data.data}

    mnist = TensorMNIST.__new__(TensorMNIST)
    mnist.root = "ROOT"
    raw = Path(mnist.raw_folder).relative_to("ROOT")
    gz = {str(raw / name) for name, _ in TensorMNIST.resources}
    assert {alt for (_, alt) in real.MNIST_FILES.layouts[0]} == gz
    mirror = TensorMNIST.mirrors[0]
    assert set(real.MNIST_FILES.urls) == {mirror + name for name, _ in TensorMNIST.resources}


def test_present_data_goes_to_avalanche_with_the_right_arguments(tmp_path, monkeypatch):
    """With files in place, the Avalanche class is called with a Path root (never a str name)."""
    import avalanche.benchmarks.classic as classic

    calls = {}

    class Fake(str):
        """Stands for the benchmark; accepts attributes like a scenario does."""

    def recorder(name):
        def fake(*args, **kwargs):
            calls[name] = (args, kwargs)
            return Fake(name)

        return fake

    for name in ("SplitCIFAR100", "SplitTinyImageNet", "CORe50", "RotatedMNIST", "PermutedMNIST"):
        monkeypatch.setattr(classic, name, recorder(name))
    monkeypatch.setattr(real, "host_reachable", lambda *a, **k: False)
    for layout in (
        real.CIFAR100_FILES.layouts[1],
        real.TINY_IMAGENET_FILES.layouts[1],
        real.CORE50_FILES.layouts[0],
        real.MNIST_FILES.layouts[0],
    ):
        for (path, *_) in layout:
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).touch()

    assert split_cifar100(tmp_path, n_experiences=10, seed=3) == "SplitCIFAR100"
    assert calls["SplitCIFAR100"] == ((10,), {"seed": 3, "dataset_root": tmp_path.resolve()})
    assert split_tiny_imagenet(tmp_path, 5) == "SplitTinyImageNet"
    assert calls["SplitTinyImageNet"][1]["dataset_root"] == tmp_path.resolve()
    assert rotated_mnist(tmp_path) == "RotatedMNIST" and permuted_mnist(tmp_path) == "PermutedMNIST"
    assert calls["PermutedMNIST"] == ((5,), {"seed": 0, "dataset_root": tmp_path.resolve()})
    assert permuted_mnist(tmp_path).n_classes == rotated_mnist(tmp_path).n_classes == 10

    assert core50_domain(tmp_path) == "CORe50"
    kwargs = calls["CORe50"][1]
    assert kwargs["scenario"] == "ni" and kwargs["dataset_root"] == tmp_path.resolve()
    assert "Resize(size=64" in repr(kwargs["eval_transform"])


def test_registry(tmp_path):
    assert set(BENCHMARKS) == {
        "glyphs", "glyphs-domain", "glyphs-permuted", "glyphs-rotated", "glyphs-shift",
        "cifar100", "tinyimagenet", "core50", "rotated-mnist", "permuted-mnist",
    }
    with pytest.raises(ValueError, match="cifar100.*glyphs"):
        load_benchmark("cifar-10")
    bm = load_benchmark(
        "glyphs", tmp_path, n_experiences=2, n_classes=4, train_per_class=2, test_per_class=1
    )
    assert len(bm.train_stream) == 2 and list((tmp_path / "glyphs").glob("*.npz"))
    bm = load_benchmark(
        "glyphs-domain", tmp_path, n_domains=2, n_classes=3, train_per_class=2, test_per_class=1
    )
    assert [list(e.classes_in_this_experience) for e in bm.train_stream] == [[0, 1, 2]] * 2
    for name in ("glyphs-permuted", "glyphs-rotated", "glyphs-shift"):
        bm = load_benchmark(
            name, tmp_path, n_domains=2, n_classes=3, train_per_class=2, test_per_class=1, image_size=16
        )
        assert len(bm.train_stream) == 2 and bm.n_classes == 3, name
