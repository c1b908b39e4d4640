"""Issue 12: nothing a user trained is lost; bad input fails before the work, with one clear message."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from avalanche_mind import MIND, gate_model, small_cnn
from avalanche_mind.errors import TrainingDivergedError
from conftest import FAST, make_mind, quiet_evaluator


def build(**kwargs):
    return MIND(model=small_cnn(10), n_experiences=2, evaluator=None, **kwargs)


# ------------------------------------------------------------- item 3 and 8: construction
@pytest.mark.parametrize("name, value, message", [
    ("beta", math.inf, "beta must be finite"),
    ("lr", math.inf, "lr must be finite"),
    ("lr_gamma", math.nan, "lr_gamma must be finite"),
    ("teacher_lr", -1.0, "teacher_lr must be > 0"),
    ("temperature", math.inf, "temperature must be finite"),
    ("weight_decay", math.nan, "weight_decay must be finite"),
    ("rejection_weight", math.inf, "rejection_weight must be finite"),
    ("lr", "0.1", "lr must be a number, got '0.1'"),
    ("beta", "5", "beta must be a number"),
    ("milestones", "40", "milestones must be a list of integer epochs"),
    ("milestones", [2.5], "milestones must be a list of integer epochs"),
    ("teacher_milestones", 35, "teacher_milestones must be a list"),
    ("self_distillation", "no", "self_distillation must be True or False, got 'no'"),
    ("weight_sharing", 1, "weight_sharing must be True or False"),
    ("eval_mb_size", 0, "eval_mb_size must be an integer >= 1"),
])
def test_bad_argument_named_at_construction(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build(**{name: value})


def test_good_arguments_still_accepted():
    build(milestones=(40,), teacher_milestones=[], lr=1, beta=0, temperature=6.5, self_distillation=False)


# ------------------------------------------------------------- item 3: divergence
@pytest.mark.parametrize("phase, overrides", [
    ("teacher", {"teacher_lr": 1e30}),
    ("distillation", {"lr": 1e30}),
])
def test_diverging_run_stops_naming_experience_phase_epoch(class_incremental, phase, overrides):
    strategy = make_mind(n_experiences=5, teacher_epochs=2, train_epochs=2, **overrides)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match=rf"experience 0 \(MIND task 0\), {phase} phase, epoch \d+ of 2"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0  # nothing of the failed experience kept
    after = strategy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------- item 4: rollback
class Interrupt(Exception):
    pass


def test_failed_experience_is_rolled_back_and_can_be_retried(class_incremental):
    from avalanche.core import SupervisedPlugin

    class FailOnce(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.armed = True

        def after_training_epoch(self, strategy, **kwargs):
            if self.armed:
                self.armed = False
                raise Interrupt

    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, plugins=[FailOnce()], teacher_epochs=1, train_epochs=1)
    with pytest.raises(Interrupt):
        strategy.train(stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0 and strategy.state.experience_ids == []
    assert all(int(layer.owner.max()) < 0 for _, layer in strategy.ownership.layers.items())
    strategy.train(stream[0], eval_streams=[])
    strategy.train(stream[1], eval_streams=[])  # the stream can finish
    assert strategy.state.experience_ids == [0, 1]
    strategy.eval(class_incremental.test_stream)


def test_empty_experience_refused_naming_it(class_incremental):
    from avalanche.benchmarks.utils import AvalancheDataset

    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, teacher_epochs=1, train_epochs=1)
    experience = stream[0]
    empty = experience.dataset.subset([])
    experience.dataset, original = empty, experience.dataset
    try:
        with pytest.raises(ValueError, match="experience 0 has no samples"):
            strategy.train(experience, eval_streams=[])
    finally:
        experience.dataset = original
    assert strategy.state.n_tasks == 0
    strategy.train(stream[0], eval_streams=[])
    strategy.eval(class_incremental.test_stream)


# ------------------------------------------------------------- item 7: the classifier
def test_partly_gated_model_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    gate_model(nn.Sequential(model[0]))  # backbone gated, head plain
    model[2] = nn.Linear(4 * 30 * 30, 10)
    with pytest.raises(ValueError, match=r"only partly gated: '2' are plain nn.Conv2d/nn.Linear.*gate_model\(model\)"):
        MIND(model=model, n_experiences=2, evaluator=None)


# ------------------------------------------------------------- item 6 and 9: the glyph cache
def test_empty_glyph_cache_is_rendered_again_naming_it(tmp_path):
    from avalanche_mind.data import glyphs

    chars = list(glyphs.CHARACTERS[:2])
    kwargs = dict(train_per_class=2, test_per_class=1, seed=0, root=tmp_path)
    first = glyphs.load_glyph_arrays(chars, **kwargs)
    path = glyphs.cache_path(chars, train_per_class=2, test_per_class=1, seed=0, style="default",
                             image_size=32, root=tmp_path)
    path.write_bytes(b"")  # a zero-length cache, as a full disk or a kill before fsync leaves
    with pytest.warns(UserWarning, match=f"glyph cache {path} is unreadable"):
        again = glyphs.load_glyph_arrays(chars, **kwargs)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert path.stat().st_size > 0  # replaced: the next run reads it


def test_unwritable_glyph_cache_folder_still_gives_the_glyphs(tmp_path):
    from avalanche_mind.data import glyphs

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    chars = list(glyphs.CHARACTERS[:2])
    with pytest.warns(UserWarning, match="cannot write the glyph cache.*AVALANCHE_MIND_DATA"):
        arrays = glyphs.load_glyph_arrays(chars, train_per_class=2, test_per_class=1, root=blocker / "sub")
    assert len(arrays["y_train"]) == 4


# ------------------------------------------------------------- item 10: checkpoint leftovers
def test_killed_save_leftovers_removed_and_permissions_follow_umask(tmp_path):
    import os

    from avalanche_mind.checkpoint import atomic_torch_save

    path = tmp_path / "run.pt"
    old_style = tmp_path / ".run.pt.k2j3h4.tmp"  # a kill mid-save, before pids were in the name
    dead = tmp_path / ".run.pt.pid999999999.abc.tmp"  # a kill mid-save: no such process
    alive = tmp_path / f".run.pt.pid{os.getpid()}.xyz.tmp"  # a save in progress: kept
    other = tmp_path / ".other.pt.abc.tmp"  # another file's: not ours to remove
    for leftover in (old_style, dead, alive, other):
        leftover.write_bytes(b"partial")
    atomic_torch_save({"x": 1}, path)
    assert not old_style.exists() and not dead.exists()
    assert alive.exists() and other.exists()
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
