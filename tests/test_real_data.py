"""Real benchmarks: a fast, clear error offline, the right files expected, Avalanche wired right,
and the runner end to end on tiny files written in each data set's official on-disk format."""
from __future__ import annotations

import json
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
from avalanche_mind.runner import compare

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


# ------------------------------------------------- end to end, on files in the real formats
# Each writer lays out a few images exactly as the official archive extracts them,
# so the runner's real path (Avalanche's classes, torchvision's readers, the
# preset, MIND and a baseline) runs on them unchanged. Only CIFAR-100's md5 check
# of the official files is bypassed (torchvision would otherwise download them).


def write_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``cifar-100-python/{train,test,meta}``: pickled dicts as in the official archive."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), n)
        entry = {
            "filenames": [f"img_{i:05d}.png" for i in range(len(fine))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            # Rows of 3072 bytes: the red, green then blue 32x32 planes.
            "data": rng.integers(0, 256, (len(fine), 3 * 32 * 32), dtype=np.uint8),
        }
        with open(folder / split, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    meta = {
        "fine_label_names": [f"class_{k}" for k in range(100)],
        "coarse_label_names": [f"superclass_{k}" for k in range(20)],
    }
    with open(folder / "meta", "wb") as fh:
        pickle.dump(meta, fh, protocol=2)
    return root


def _jpeg(path: Path, rng: np.random.Generator, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")


def write_tiny_imagenet(root: Path, train_per_class: int = 2, val_per_class: int = 1) -> Path:
    """``tiny-imagenet-200/``: wnids.txt, words.txt, train/<wnid>/images, val/images + annotations."""
    folder = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = [f"n{1440764 + k:08d}" for k in range(200)]  # Avalanche reads exactly 200 classes
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tthing {k}, object {k}\n" for k, w in enumerate(wnids)))
    for wnid in wnids:
        boxes = []
        for i in range(train_per_class):
            name = f"{wnid}_{i}.JPEG"
            _jpeg(folder / "train" / wnid / "images" / name, rng, 64)
            boxes.append(f"{name}\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    annotations = []
    for k in range(200 * val_per_class):
        name = f"val_{k}.JPEG"
        _jpeg(folder / "val" / "images" / name, rng, 64)
        annotations.append(f"{name}\t{wnids[k % 200]}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    _jpeg(folder / "test" / "images" / "test_0.JPEG", rng, 64)  # unlabelled, never read
    return root


#: CORe50's sessions: 8 for training (one NI batch each), 3 held out for testing.
CORE50_TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)
CORE50_TEST_SESSIONS = (3, 7, 10)


def write_core50(root: Path, n_objects: int = 10, per_session: int = 1) -> Path:
    """CORe50 as its zips and pickles extract: ``core50_128x128/s<S>/o<O>/C_<SS>_<OO>_<III>.png``,
    ``batches_filelists/NI_inc/run<R>/{train_batch_<BB>,test}_filelist.txt`` ("path label" lines,
    paths under core50_128x128) and ``paths.pkl``, ``LUP.pkl``, ``labels.pkl``,
    ``labels2names.pkl`` (per scenario, per run, per batch; the test set last)."""
    rng = np.random.default_rng(0)
    batches = [[s] for s in CORE50_TRAIN_SESSIONS] + [list(CORE50_TEST_SESSIONS)]
    paths, lup, labels = [], [], []
    for sessions in batches:
        indices, targets = [], []
        for s in sessions:
            for o in range(1, n_objects + 1):
                for i in range(per_session):
                    rel = f"s{s}/o{o}/C_{s:02d}_{o:02d}_{i:03d}.png"
                    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
                    (root / "core50_128x128" / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(root / "core50_128x128" / rel)
                    indices.append(len(paths))
                    targets.append(o - 1)
                    paths.append(rel)
        lup.append(indices)
        labels.append(targets)
    for run in range(10):  # the same order in every run: enough for any run to load
        folder = root / "batches_filelists" / "NI_inc" / f"run{run}"
        folder.mkdir(parents=True)
        for b, indices in enumerate(lup):
            name = "test_filelist.txt" if b == len(lup) - 1 else f"train_batch_{b:02d}_filelist.txt"
            (folder / name).write_text("".join(f"{paths[k]} {labels[b][j]}\n" for j, k in enumerate(indices)))
    names = {o: f"object{o + 1}" for o in range(n_objects)}
    for name, value in (
        ("paths.pkl", paths),
        ("LUP.pkl", {"ni": [lup] * 10}),
        ("labels.pkl", {"ni": [labels] * 10}),
        ("labels2names.pkl", {"ni": [names] * 10}),
    ):
        with open(root / name, "wb") as fh:
            pickle.dump(value, fh, protocol=2)
    return root


def _bypass_cifar_md5(monkeypatch) -> None:
    """torchvision compares each CIFAR file's md5 with the official one (and downloads on a
    mismatch); here a file passes when it exists. Nothing else is bypassed."""
    import os

    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


#: A couple of tiny experiences: one epoch per phase, a one-block ResNet, small batches.
_TINY_BUDGET = [
    "--set", "teacher_epochs=1", "--set", "teacher_milestones=()",
    "--set", "train_epochs=1", "--set", "milestones=()",
    "--set", "batch_size=32", "--set", "eval_batch_size=128",
    "--set", "model_kwargs.blocks_per_stage=1",
]

REAL_FORMATS = [
    # preset, writer, extra overrides, scenario, experiences, input shape, train sizes
    ("cifar100", write_cifar100, ["--set", "benchmark_kwargs.n_experiences=2"],
     "class", 2, [3, 32, 32], [100, 100]),
    ("tinyimagenet", write_tiny_imagenet, ["--set", "benchmark_kwargs.n_experiences=2"],
     "class", 2, [3, 64, 64], [200, 200]),
    ("core50", write_core50, [], "domain", 8, [3, 64, 64], [10] * 8),
]


@pytest.mark.parametrize(
    "preset, writer, extra, scenario, n_exp, shape, sizes", REAL_FORMATS, ids=[r[0] for r in REAL_FORMATS]
)
def test_runner_real_path_end_to_end_on_files_in_the_official_format(
    tmp_path, monkeypatch, preset, writer, extra, scenario, n_exp, shape, sizes
):
    """``compare.py --preset P --data-root DIR`` on tiny files laid out as the real data sets."""
    data = writer(tmp_path / "data")
    if preset == "cifar100":
        _bypass_cifar_md5(monkeypatch)

    def no_network(*args, **kwargs):
        raise AssertionError("the files are there: nothing may be downloaded")

    monkeypatch.setattr(real, "host_reachable", no_network)
    out = tmp_path / "out"
    status = compare.main([
        "--preset", preset, "--data-root", str(data), "--out", str(out),
        "--strategies", "mind", "naive", "--quiet", *_TINY_BUDGET, *extra,
    ])
    assert status == 0
    result = json.loads((out / "results.json").read_text())
    stream = result["stream"]
    assert (result["scenario"], result["n_experiences"]) == (scenario, n_exp)
    assert stream["input_shape"] == shape and stream["train_sizes"] == sizes
    for name in ("mind", "naive"):
        run = result["strategies"][name]["runs"][0]
        assert len(run["tag_matrix"]) == n_exp
        assert all(len(row) == stream["n_test_experiences"] for row in run["tag_matrix"])
        assert 0.0 <= run["tag"] <= 1.0
    assert (out / "results.md").is_file()


def test_files_that_fail_the_checksum_give_the_clear_error_not_a_traceback(tmp_path, monkeypatch):
    """Files in place but not the official ones: torchvision re-downloads; offline that fails."""
    import torchvision.datasets.cifar as cifar
    from urllib.error import URLError

    def download(*args, **kwargs):  # what the download does without a network
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(cifar, "download_and_extract_archive", download)
    monkeypatch.setattr(real, "host_reachable", lambda *a, **k: False)
    write_cifar100(tmp_path)
    with pytest.raises(DatasetNotAvailableError, match="found under .* could not be loaded") as info:
        split_cifar100(tmp_path, n_experiences=2)
    assert "cifar-100-python.tar.gz" in str(info.value)
    assert isinstance(info.value.__cause__, URLError)
