"""MINDConfig is the only source of MIND's defaults and validation: Predictor, presets, runner and CLI agree."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from avalanche_mind import PAPER_SETTINGS, small_cnn
from avalanche_mind.cli import build_parser
from avalanche_mind.cli.train import resolve_train
from avalanche_mind.core.config import DEFAULTS, SETTINGS, MINDConfig, resolve_settings
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.state import MINDState
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.runner.presets import PRESETS, RUNNER_NAMES, RUNNER_SETTINGS, Preset
from avalanche_mind.runner.strategies import STRATEGIES, RunContext


def test_predictor_defaults_are_mind_config_s():
    init = inspect.signature(Predictor.__init__).parameters
    for name in ("capacity", "weight_sharing", "temperature", "task_inference"):
        assert init[name].default == DEFAULTS[name], name
    # From a checkpoint: None, the checkpoint's own settings (tests/test_predictor.py checks they are used).
    loaded = inspect.signature(Predictor.from_checkpoint).parameters
    assert loaded["temperature"].default is None and loaded["task_inference"].default is None


@pytest.mark.parametrize("setting, value", [("temperature", 0.0), ("temperature", float("inf")),
                                            ("task_inference", "bogus"), ("capacity", 1.0)])
def test_predictor_validates_as_mind_config_does(setting, value):
    with pytest.raises(ValueError) as expected:
        MINDConfig(n_experiences=3, **{setting: value})
    state = MINDState(slices=[[0, 1]], experience_ids=[0], bn_snapshots=[{}])
    with pytest.raises(ValueError) as raised:
        Predictor(small_cnn(10), state, n_experiences=3, **{"task_inference": "max_confidence", setting: value})
    assert str(raised.value) == str(expected.value)


def test_capacity_and_allocation_rule_are_checked_by_the_config_s_rules():
    with pytest.raises(ValueError) as expected:
        MINDConfig(n_experiences=3, capacity=1.5)
    with pytest.raises(ValueError) as raised:
        OwnershipMap(small_cnn(10), 3, capacity=1.5)
    assert str(raised.value) == str(expected.value)
    with pytest.raises(ValueError, match="unknown allocation rule 'bogus'"):
        OwnershipMap(small_cnn(10), 3).allocate(0, [0, 1], rule="bogus")


def test_no_preset_field_restates_a_mind_setting():
    assert not {f.name for f in dataclasses.fields(Preset)} & (set(DEFAULTS) | set(RUNNER_NAMES))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_holds_only_what_differs_from_mind_config(name):
    preset = PRESETS[name]
    assert set(preset.mind) <= set(SETTINGS)
    for key, value in preset.mind.items():
        assert value != DEFAULTS[key], f"{name} restates MINDConfig's default {key}={value!r}"
    # What the runner builds: the preset's values, MINDConfig's default for every other setting.
    effective = MINDConfig(n_experiences=10, **resolve_settings(preset.mind_keywords(), False, {}))
    assert effective == MINDConfig(n_experiences=10).replace(**preset.mind, **preset.mind_kwargs)
    for key in SETTINGS:
        if key not in preset.mind and key not in preset.mind_kwargs:
            assert getattr(effective, key) == DEFAULTS[key], key
    # The attributes the runner and the baselines read are the same values.
    for key in RUNNER_SETTINGS:
        assert preset.setting(key) == getattr(effective, key), key
    assert (preset.batch_size, preset.eval_batch_size) == (effective.train_mb_size, effective.eval_mb_size)


def test_the_runners_mind_row_is_the_preset_over_mind_config():
    preset = PRESETS["tiny"]
    ctx = RunContext(preset=preset, n_experiences=3, num_classes=6, in_channels=3, scenario="class", device="cpu")
    assert STRATEGIES["mind"].build(ctx).config == MINDConfig(n_experiences=3, **preset.mind)
    assert STRATEGIES["mind-paper"].build(ctx).config == MINDConfig(n_experiences=3, **preset.mind, **PAPER_SETTINGS)


def test_precedence_is_keyword_over_paper_over_preset():
    preset = {"distill_loss": "cosine", "task_inference": "zscore", "temperature": 3.0}
    assert resolve_settings(preset, False, {}) == preset
    paper = resolve_settings(preset, True, {})
    assert paper == {**PAPER_SETTINGS, "temperature": 3.0}  # the paper's settings beat the preset's
    keyword = resolve_settings(preset, True, {"task_inference": "entropy", "temperature": 1.0})
    assert keyword["task_inference"] == "entropy" and keyword["temperature"] == 1.0  # a keyword beats both
    assert keyword["distill_loss"] == PAPER_SETTINGS["distill_loss"]
    with pytest.raises(ValueError, match="unknown MIND setting"):
        resolve_settings({"temprature": 2.0}, False, {})


def test_train_and_the_runner_resolve_the_same_way(monkeypatch):
    preset = dataclasses.replace(PRESETS["tiny"], mind={**PRESETS["tiny"].mind, "distill_loss": "cosine"},
                                 mind_kwargs={"task_inference": "zscore"})
    monkeypatch.setitem(PRESETS, "tiny", preset)
    ctx = RunContext(preset=preset, n_experiences=3, num_classes=6, in_channels=3, scenario="class", device="cpu")

    def train(*options):
        mind = resolve_train(build_parser().parse_args(["train", "--preset", "tiny", *options]))["mind"]
        return MINDConfig(n_experiences=3, **mind)

    assert train() == STRATEGIES["mind"].build(ctx).config
    assert train().distill_loss == "cosine" and train().task_inference == "zscore"
    assert train("--paper") == STRATEGIES["mind-paper"].build(ctx).config
    assert train("--paper").distill_loss == PAPER_SETTINGS["distill_loss"]  # paper over preset
    assert train("--paper", "--distill-loss", "l2").distill_loss == "l2"  # an option over both
    assert train("--paper", "--task-inference", "energy").task_inference == "energy"
