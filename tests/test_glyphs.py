"""The offline glyph benchmarks: determinism, balance, caching, learnability, Avalanche shape."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avalanche_mind.data import glyph_cache, glyphs
from avalanche_mind.data.glyphs import (
    CHARACTERS,
    DOMAIN_STYLES,
    SHIFT_DOMAINS,
    STYLES,
    glyph_class_incremental,
    glyph_domain_incremental,
    glyph_permuted,
    glyph_rotated,
    glyph_shift,
    load_glyph_arrays,
    permuted_domains,
    render_glyphs,
    rotated_domains,
)
from avalanche_mind.data.glyph_styles import resolve_style

FIVE = list(CHARACTERS[:5])  # the digits 2-6: what n_classes=5 selects
#: Every style a benchmark draws with (the rotated benchmark's are "plain", turned).
ALL_STYLES = ("default", *DOMAIN_STYLES, "plain", *sorted({d.style for d in SHIFT_DOMAINS}))


# ------------------------------------------------------------------ generator
def test_every_class_has_several_real_fonts_in_every_style():
    assert len(CHARACTERS) == len(set(CHARACTERS)) == 100
    for name in ALL_STYLES:
        for char in CHARACTERS:
            faces = STYLES[name].faces_for(char)
            assert len(faces) >= 2, (name, char, faces)
    # Computer Modern's TeX encoding puts other glyphs at ASCII symbol code points.
    cmr = next(f for f in glyphs.FONT_FACES if f.file == "cmr10.ttf")
    assert glyphs.has_glyph(cmr, "A") and not glyphs.has_glyph(cmr, "<")


def test_render_is_deterministic_and_seeded():
    x1, y1 = render_glyphs(FIVE, 4, seed=0)
    x2, y2 = render_glyphs(FIVE, 4, seed=0)
    x3, _ = render_glyphs(FIVE, 4, seed=1)
    assert x1.shape == (20, 32, 32, 3) and x1.dtype == np.uint8
    assert y1.dtype == np.int64 and np.array_equal(y1, np.repeat(np.arange(5), 4))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    # Different images within a class and between train and test.
    assert len({x1[i].tobytes() for i in range(20)}) == 20
    xt, _ = render_glyphs(FIVE, 4, seed=0, split="test")
    assert not any(np.array_equal(a, b) for a in x1 for b in xt)


def test_a_sample_does_not_depend_on_what_else_is_asked():
    big, _ = render_glyphs(FIVE, 6, seed=3)
    small, _ = render_glyphs(FIVE[2:4], 3, seed=3)
    # Class FIVE[2], samples 0..2, are the same whatever the request around them.
    assert np.array_equal(small[:3], big[12:15])
    parallel, _ = render_glyphs(FIVE, 6, seed=3, workers=2)
    assert np.array_equal(parallel, big)


def test_every_image_is_legible():
    """A glyph always stands out from its background (luma range of the image)."""
    luma = np.array([0.299, 0.587, 0.114])
    for name in ALL_STYLES:
        x, _ = render_glyphs(CHARACTERS[::7], 6, seed=0, style=name)
        lum = (x.astype(np.float64) / 255) @ luma
        flat = lum.reshape(len(lum), -1)
        spread = np.percentile(flat, 99, axis=1) - np.percentile(flat, 1, axis=1)
        assert spread.min() > 0.25, (name, spread.min())


def test_arguments_are_checked_with_a_fix_in_the_message():
    with pytest.raises(ValueError, match="divisible"):
        glyph_class_incremental(n_experiences=3, n_classes=10)
    with pytest.raises(ValueError, match="n_classes"):
        glyph_class_incremental(n_experiences=1, n_classes=101)
    with pytest.raises(ValueError, match="n_domains"):
        glyph_domain_incremental(n_domains=len(DOMAIN_STYLES) + 1)
    with pytest.raises(ValueError, match="train_per_class"):
        glyph_class_incremental(n_classes=10, train_per_class=0)
    with pytest.raises(ValueError, match="style"):
        render_glyphs(FIVE, 1, style="nope")
    with pytest.raises(ValueError, match="split"):
        render_glyphs(FIVE, 1, split="val")


# ---------------------------------------------------------------------- cache
def test_cache_round_trip_and_key(tmp_path, monkeypatch):
    kwargs = dict(train_per_class=3, test_per_class=2, seed=0, root=tmp_path)
    first = load_glyph_arrays(FIVE, **kwargs)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    for split, n in (("train", 3), ("test", 2)):
        assert np.array_equal(np.bincount(first[f"y_{split}"]), [n] * 5)

    def no_render(*args, **kwargs):
        raise AssertionError("the second call must read the cache")

    monkeypatch.setattr(glyph_cache, "render_glyphs", no_render)
    second = load_glyph_arrays(FIVE, **kwargs)
    for key in first:
        assert np.array_equal(first[key], second[key])
    monkeypatch.undo()

    load_glyph_arrays(FIVE, **{**kwargs, "seed": 1})
    load_glyph_arrays(FIVE, **{**kwargs, "test_per_class": 3})
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_default_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AVALANCHE_MIND_DATA", str(tmp_path))
    assert glyphs.default_root() == tmp_path / "glyphs"


# ---------------------------------------------------------------- learnability
def _features(x: np.ndarray) -> torch.Tensor:
    """Luma distance from the background, scaled per image.

    Colour and polarity vary at random; removing them with a fixed, label-free
    transform lets a small CNN fit in seconds on a CPU. It does not make classes
    separable that are not: only the glyph's shape is left.
    """
    lum = (x.astype(np.float32) / 255) @ np.array([0.299, 0.587, 0.114], np.float32)
    dist = np.abs(lum - np.median(lum.reshape(len(lum), -1), axis=1)[:, None, None])
    dist /= dist.reshape(len(dist), -1).max(axis=1)[:, None, None] + 1e-6
    return torch.from_numpy(dist[:, None])


def _fit(x: np.ndarray, y: np.ndarray, epochs: int = 8) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16, int(y.max()) + 1),
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    features, targets = _features(x), torch.from_numpy(y)
    for _ in range(epochs):
        for idx in torch.randperm(len(targets)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(features[idx]), targets[idx]).backward()
            opt.step()
    return model.eval()


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(_features(x)).argmax(1).numpy() == y).mean())


def test_classes_are_distinguishable():
    """Held-out glyphs of 5 classes are recognised far above chance (0.2)."""
    model = _fit(*render_glyphs(FIVE, 120, seed=0))
    acc = _accuracy(model, *render_glyphs(FIVE, 60, seed=0, split="test"))
    assert acc >= 0.8, acc


def test_domains_shift_the_distribution():
    """A model fit to domain 0 does worse on the other domains than on domain 0."""
    model = _fit(*render_glyphs(FIVE, 120, seed=0, style=DOMAIN_STYLES[0]))
    accs = {
        name: _accuracy(model, *render_glyphs(FIVE, 60, seed=0, style=name, split="test"))
        for name in DOMAIN_STYLES
    }
    own = accs.pop(DOMAIN_STYLES[0])
    assert own >= 0.8, own
    assert np.mean(list(accs.values())) <= own - 0.1, (own, accs)
    assert min(accs.values()) <= own - 0.2, (own, accs)


# --------------------------------------------------------- Avalanche benchmarks
def test_class_incremental_benchmark(tmp_path):
    bm = glyph_class_incremental(
        n_experiences=5, n_classes=10, train_per_class=4, test_per_class=2, root=tmp_path
    )
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    seen = []
    for i, exp in enumerate(bm.train_stream):
        assert exp.current_experience == i
        classes = list(exp.classes_in_this_experience)
        assert len(classes) == 2
        targets = [int(t) for t in exp.dataset.targets]
        assert sorted(set(targets)) == sorted(classes)
        assert np.array_equal(np.bincount(targets, minlength=10)[classes], [4, 4])
        seen += classes
    assert sorted(seen) == list(range(10))
    assert [c for e in bm.test_stream for c in e.classes_in_this_experience] == seen
    assert bm.characters == CHARACTERS[:10] and bm.n_classes == 10

    x, y, t = bm.train_stream[0].dataset[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert int(y) in bm.train_stream[0].classes_in_this_experience and t == 0

    again = glyph_class_incremental(
        n_experiences=5, n_classes=10, train_per_class=4, test_per_class=2, root=tmp_path
    )
    assert again.classes_order == bm.classes_order
    other = glyph_class_incremental(
        n_experiences=5, n_classes=10, train_per_class=4, test_per_class=2, root=tmp_path,
        seed=1,
    )
    assert other.classes_order != bm.classes_order


def test_domain_incremental_benchmark(tmp_path):
    bm = glyph_domain_incremental(
        n_domains=5, n_classes=4, train_per_class=3, test_per_class=2, root=tmp_path
    )
    assert len(bm.train_stream) == len(bm.test_stream) == 5
    assert bm.domains == DOMAIN_STYLES[:5] and bm.n_classes == 4
    for stream, n in ((bm.train_stream, 3), (bm.test_stream, 2)):
        for i, exp in enumerate(stream):
            assert exp.current_experience == i
            assert list(exp.classes_in_this_experience) == [0, 1, 2, 3]
            targets = [int(t) for t in exp.dataset.targets]
            assert np.array_equal(np.bincount(targets), [n] * 4)
    # Labels are not remapped: experience d holds style d's rendering of the same classes.
    x, y, t = bm.train_stream[2].dataset[0]
    expected, _ = render_glyphs(CHARACTERS[:1], 1, seed=0, style=DOMAIN_STYLES[2])
    assert (y, t) == (0, 0)
    assert torch.equal(x, torch.from_numpy(expected[0]).permute(2, 0, 1).float() / 255)


# ------------------------------------------- domain-incremental glyphs where fine-tuning forgets
SMALL = dict(n_classes=3, train_per_class=3, test_per_class=2, image_size=16)
NEW_BENCHMARKS = {"permuted": glyph_permuted, "rotated": glyph_rotated, "shift": glyph_shift}


def _images(experience) -> np.ndarray:
    """The experience's images as uint8 (N, H, W, 3), grouped by label as rendered.

    (Avalanche may list an experience's classes in another order, e.g. {8, 6, 7}.)
    """
    items = [experience.dataset[i] for i in range(len(experience.dataset))]
    order = np.argsort([int(y) for _, y, _ in items], kind="stable")
    x = torch.stack([items[i][0] for i in order])
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("kind", NEW_BENCHMARKS)
def test_new_domain_benchmarks_hold_every_class_balanced_in_every_domain(tmp_path, kind):
    bm = NEW_BENCHMARKS[kind](n_domains=4, root=tmp_path, **SMALL)
    assert len(bm.train_stream) == len(bm.test_stream) == len(bm.domains) == 4
    assert bm.n_classes == 3 and bm.characters == CHARACTERS[:3]
    for stream, n in ((bm.train_stream, 3), (bm.test_stream, 2)):
        for i, exp in enumerate(stream):
            assert exp.current_experience == i
            assert list(exp.classes_in_this_experience) == [0, 1, 2]
            assert np.array_equal(np.bincount([int(t) for t in exp.dataset.targets]), [n] * 3)
            x, _, t = exp.dataset[0]
            assert x.shape == (3, 16, 16) and t == 0
    # Every domain shows the classes differently.
    images = [_images(e) for e in bm.train_stream]
    assert all(not np.array_equal(a, b) for k, a in enumerate(images) for b in images[k + 1:])


@pytest.mark.parametrize("kind", NEW_BENCHMARKS)
def test_new_domain_benchmarks_are_fixed_by_the_seed_and_reuse_their_cache(tmp_path, monkeypatch, kind):
    build = NEW_BENCHMARKS[kind]
    first = build(n_domains=3, root=tmp_path / "a", **SMALL)
    files = sorted(p.name for p in (tmp_path / "a").glob("*.npz"))
    # One render per style: the permuted domains share one, "inverted" shares "clean"'s.
    assert len(files) == {"permuted": 1, "rotated": 3, "shift": 2}[kind]
    again = build(n_domains=3, root=tmp_path / "b", **SMALL)  # rendered afresh
    other = build(n_domains=3, root=tmp_path / "c", seed=1, **SMALL)

    def no_render(*args, **kwargs):
        raise AssertionError("a second build must read the cache")

    monkeypatch.setattr(glyph_cache, "render_glyphs", no_render)
    cached = build(n_domains=3, root=tmp_path / "a", **SMALL)
    for d in range(3):
        reference = _images(first.train_stream[d])
        assert np.array_equal(_images(again.train_stream[d]), reference)
        assert np.array_equal(_images(cached.test_stream[d]), _images(first.test_stream[d]))
        assert not np.array_equal(_images(other.train_stream[d]), reference)


def test_permuted_domains_are_distinct_fixed_pixel_bijections(tmp_path):
    bm = glyph_permuted(n_domains=4, root=tmp_path, **SMALL)
    base, _ = render_glyphs(CHARACTERS[:3], 3, seed=0, style="plain", image_size=16)
    domains = permuted_domains(4, seed=0)
    assert bm.domains == tuple(d.name for d in domains) and domains[0].permutation is None
    assert np.array_equal(_images(bm.train_stream[0]), base)  # domain 0: the identity
    orders = [d.pixel_permutation(16) for d in domains[1:]]
    for d, order in enumerate(orders, 1):
        assert np.array_equal(np.sort(order), np.arange(256))  # a bijection of the pixels
        assert (order != np.arange(256)).mean() > 0.9
        moved = base.reshape(len(base), 256, 3)[:, order].reshape(base.shape)
        assert np.array_equal(_images(bm.train_stream[d]), moved)  # every channel moves with its pixel
    assert all((a != b).mean() > 0.9 for k, a in enumerate(orders) for b in orders[k + 1:])
    # The same domain d whatever the number of domains; another seed, other permutations.
    assert np.array_equal(permuted_domains(2, seed=0)[1].pixel_permutation(16), orders[0])
    assert not np.array_equal(permuted_domains(2, seed=1)[1].pixel_permutation(16), orders[0])


def _ink_axis(images: np.ndarray) -> np.ndarray:
    """Orientation (degrees anticlockwise, in [0, 180)) of each image's principal ink axis."""
    lum = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    flat = lum.reshape(len(lum), -1)
    ink = np.abs(lum - np.median(flat, axis=1)[:, None, None])
    h, w = lum.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]
    up = -ys.astype(np.float64)  # image rows go down; angles are measured with y up
    axes = []
    for weight in ink:
        m = weight.sum()
        cx, cy = (weight * xs).sum() / m, (weight * up).sum() / m
        cxx = (weight * (xs - cx) ** 2).sum() / m
        cyy = (weight * (up - cy) ** 2).sum() / m
        cxy = (weight * (xs - cx) * (up - cy)).sum() / m
        axes.append(np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)) % 180)
    return np.array(axes)


def test_rotated_domains_turn_the_same_samples_by_their_angle():
    """'=' is two horizontal bars: its ink's principal axis follows the domain's angle."""
    angles = (0.0, 45.0, 90.0, 135.0)
    grounds = []
    for domain, angle in zip(rotated_domains(angles), angles):
        x, _ = render_glyphs(["="], 8, seed=0, style=domain.style, image_size=32)
        error = (_ink_axis(x) - angle + 90) % 180 - 90
        assert np.abs(error).max() < 20 and abs(error.mean()) < 8, (angle, error)
        grounds.append(np.median(x.reshape(8, -1, 3), axis=1))
    # Shared draws: the same samples (here: the same ground colour of each) in every domain.
    assert all(np.array_equal(g, grounds[0]) for g in grounds[1:])
    assert glyphs.rotation_angles(5) == (0.0, 45.0, 90.0, 135.0, 180.0)


def test_shift_domains_apply_their_change(tmp_path):
    bm = glyph_shift(n_domains=5, root=tmp_path, **SMALL)
    assert bm.domains == ("clean", "inverted", "noise", "blur", "colour-swap")
    clean, inverted, noise, blur, colour = (_images(e).astype(np.int64) for e in bm.train_stream)
    assert np.array_equal(inverted, 255 - clean)
    swapped, _ = render_glyphs(CHARACTERS[:3], 3, seed=0, style=SHIFT_DOMAINS[4].style, image_size=16)
    assert np.array_equal(colour, swapped[..., [2, 0, 1]])

    def roughness(x):  # mean step between horizontal neighbours
        return np.abs(np.diff(x, axis=2)).mean()

    assert roughness(noise) > 2 * roughness(clean) > 2 * roughness(blur)


def test_new_domain_benchmarks_check_their_arguments():
    with pytest.raises(ValueError, match="n_domains"):
        glyph_shift(n_domains=len(SHIFT_DOMAINS) + 1)
    with pytest.raises(ValueError, match="n_domains"):
        glyph_permuted(n_domains=0)
    with pytest.raises(ValueError, match="angles"):
        glyph_rotated(n_domains=3, angles=(0, 90))


def test_shift_domains_alternate_the_glyph_polarity():
    """Dark glyphs on light grounds, then light on dark, in turn: what makes fine-tuning forget."""
    luma = np.array([0.299, 0.587, 0.114])
    for k, domain in enumerate(SHIFT_DOMAINS):
        x, _ = render_glyphs(CHARACTERS[:4], 3, seed=0, style=domain.style, image_size=32)
        lum = (domain.apply(x).astype(np.float64) / 255) @ luma
        flat = lum.reshape(len(lum), -1)
        ground = np.median(flat, axis=1)
        # The glyph is the longer tail of the luma distribution: below the ground if dark.
        below = ground - np.percentile(flat, 1, axis=1)
        above = np.percentile(flat, 99, axis=1) - ground
        assert ((below > above) if k % 2 == 0 else (above > below)).all(), domain.name


def test_older_styles_keep_their_cache_key():
    """rotation and draws came later: at their neutral value they stay out of the key, so the
    caches rendered before them are still read; a rotated style's key holds both."""
    import json

    def key(style):
        return json.loads(glyph_cache._cache_key(FIVE, 3, 2, 0, resolve_style(style), 16))["style"]

    assert not {"rotation", "draws"} & set(key("default"))
    turned = rotated_domains([45.0])[0].style
    assert (key(turned)["rotation"], key(turned)["draws"]) == (45.0, "plain")


def test_new_benchmarks_have_cpu_presets_modelled_on_glyphs_domain_cpu():
    import dataclasses

    from avalanche_mind.data.real import BENCHMARKS
    from avalanche_mind.runner.presets import get_preset, untuned

    reference = dataclasses.asdict(untuned(get_preset("glyphs-domain-cpu")))  # baselines: tuned per benchmark
    for kind in NEW_BENCHMARKS:
        preset = get_preset(f"glyphs-{kind}-cpu")
        assert preset.benchmark == f"glyphs-{kind}" and preset.benchmark in BENCHMARKS
        fields = dataclasses.asdict(untuned(preset))  # the baselines' own values: its own search's
        for name in ("name", "description", "benchmark"):
            fields.pop(name), reference.pop(name, None)
        assert fields == reference, kind  # same data sizes, backbone, schedule and notes
