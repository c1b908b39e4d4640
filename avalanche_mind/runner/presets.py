"""One readable configuration per benchmark, in the spirit of Mammoth's per-method configs.

A :class:`Preset` holds everything the comparison runner needs: which benchmark to
build, which backbone, MIND's settings and the baselines' derived budget. Its MIND
settings are only what departs from MINDConfig's defaults (``Preset.mind``, under
MINDConfig's names); every other setting is MINDConfig's default (the paper's
CIFAR-100/10 settings), written nowhere else. The baselines' budget is derived, never typed
twice: every baseline trains ``teacher_epochs + train_epochs`` epochs per experience
with MIND's teacher optimiser (AdamW, ``teacher_lr``), halving the learning rate at
the teacher milestones and at ``teacher_epochs + m`` for each distillation milestone ``m``.
By default PackNet spends the first ``teacher_epochs`` of them before pruning and the
last ``train_epochs`` after it (post-prune fine-tuning), mirroring MIND's teacher and
distillation phases; a tuned preset may move that split (never the total) and
PackNet's learning rate, as it sets LwF's, EWC's and SI's own hyperparameters.

Change one field from the command line with ``--set field=value`` (for example
``--set temperature=4 --set train_epochs=10``; any MIND setting by MINDConfig's name).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from avalanche_mind.core.config import DEFAULTS

RUNNER_SETTINGS = ("teacher_epochs", "teacher_milestones", "train_epochs", "milestones", "temperature", "teacher_lr",
                   "lr", "lr_gamma", "beta", "train_mb_size", "eval_mb_size", "weight_decay", "capacity")
"""The MIND settings the runner reads from a preset (the baselines' budget among them): readable as
attributes (``preset.teacher_lr``) and written, resolved, into every record of a result."""
RUNNER_NAMES = {"batch_size": "train_mb_size", "eval_batch_size": "eval_mb_size"}
"""The runner's own names of two MIND settings, as attributes and in records (``--set`` takes both names)."""


@dataclass(frozen=True)
class Preset:
    """A benchmark, a backbone and the hyperparameters of every strategy on it."""

    name: str
    description: str
    benchmark: str
    """Name understood by ``avalanche_mind.data.registry.load_benchmark``."""
    benchmark_kwargs: Mapping[str, Any]
    model: str
    """A name of ``avalanche_mind.models.MODELS``: ``resnet`` (the paper's CIFAR ResNet; 5 blocks per
    stage is ResNet-32) or ``small_cnn`` here."""
    model_kwargs: Mapping[str, Any]
    mind: Mapping[str, Any] = field(default_factory=dict)
    """MIND's settings where this preset departs from MINDConfig's defaults, under MINDConfig's names: every
    MIND row, the paper's too, takes them, and the baselines' budget derives from them."""
    # Baselines: their own hyperparameters. A preset searched by ``compare --tune``
    # (avalanche_mind.runner.tuning) sets the values chosen on a validation split, and
    # ``benchmarks/tuning/<preset>.json`` records the search; the defaults are untuned.
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    ewc_lambda: float = 100.0
    si_lambda: float = 1.0
    packnet_lr: Optional[float] = None
    """PackNet's learning rate; None: ``teacher_lr``, every other baseline's."""
    packnet_post_prune_epochs: Optional[int] = None
    """How many of PackNet's ``baseline_epochs`` follow the pruning; None: ``train_epochs``, MIND's distillation."""
    packnet_groups: int = 8
    """GroupNorm groups (affine=False) that replace PackNet's BatchNorm; see ``runner.packnet``."""
    mind_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the ``mind`` strategy (MIND's defaults otherwise), e.g.
    ``--set mind_kwargs.task_inference=zscore``; the defaults row and its variants (the negatives rows)
    take them, the paper's row and its ladder ignore them."""
    notes: Tuple[str, ...] = field(default_factory=tuple)
    """Caveats printed with every result of this preset (for example: reduced CPU budget)."""

    def setting(self, name: str) -> Any:
        """MIND's setting ``name`` on this preset: its own value, else MINDConfig's default."""
        return self.mind.get(name, DEFAULTS[name])

    def __getattr__(self, name: str) -> Any:
        """``preset.teacher_lr``, ``preset.batch_size``...: a setting of :data:`RUNNER_SETTINGS`, resolved."""
        key = RUNNER_NAMES.get(name, name)
        if key in RUNNER_SETTINGS:
            return self.setting(key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def mind_keywords(self, paper: bool = False) -> Dict[str, Any]:
        """The preset's MIND keywords for a row: ``mind``, and ``mind_kwargs`` unless it is a paper row."""
        return {**self.mind, **({} if paper else self.mind_kwargs)}

    @property
    def baseline_epochs(self) -> int:
        return self.teacher_epochs + self.train_epochs

    @property
    def baseline_milestones(self) -> Tuple[int, ...]:
        return tuple(self.teacher_milestones) + tuple(self.teacher_epochs + m for m in self.milestones)

    def packnet_schedule(self) -> Tuple[float, int]:
        """PackNet's learning rate and post-prune epochs, the defaults resolved."""
        lr = self.teacher_lr if self.packnet_lr is None else self.packnet_lr
        post = self.train_epochs if self.packnet_post_prune_epochs is None else self.packnet_post_prune_epochs
        return lr, post

    def budget_note(self) -> str:
        packnet_lr, post_prune = self.packnet_schedule()
        return (
            f"Budget: MIND trains a teacher for {self.teacher_epochs} epochs (lr {self.teacher_lr}, "
            f"milestones {list(self.teacher_milestones)}) and distils for {self.train_epochs} epochs "
            f"(lr {self.lr}, milestones {list(self.milestones)}) per experience. Every baseline gets "
            f"the same number of passes over each training image: {self.baseline_epochs} epochs per "
            f"experience (AdamW lr {self.teacher_lr}, weight decay {self.weight_decay}, LR x{self.lr_gamma} "
            f"at epochs {list(self.baseline_milestones)}); PackNet (Adam, lr {packnet_lr}) prunes after epoch "
            f"{self.baseline_epochs - post_prune} and fine-tunes the kept weights for {post_prune} post-prune "
            f"epochs; Joint trains {self.baseline_epochs} epochs on the union of all experiences. MIND (not its "
            "self-distillation variants) also runs the teacher forward during distillation."
        )

    def to_dict(self) -> Dict[str, Any]:
        """What results record: the fields, ``mind`` as RUNNER_SETTINGS resolved (runner names) and its other keys."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "mind"}
        runner_name = {mind: runner for runner, mind in RUNNER_NAMES.items()}
        data.update({runner_name.get(k, k): self.setting(k) for k in (*RUNNER_SETTINGS, *self.mind)})
        data["baseline_epochs"] = self.baseline_epochs
        data["baseline_milestones"] = list(self.baseline_milestones)
        return data


BASELINE_FIELDS = ("lwf_alpha", "lwf_temperature", "ewc_lambda", "si_lambda", "packnet_lr",
                   "packnet_post_prune_epochs")
"""The baselines' own hyperparameters: searched per benchmark (``compare --tune``), never inherited."""


def untuned(preset: Preset) -> Preset:
    """``preset`` with the baselines' own hyperparameters at their (untuned) defaults."""
    return dataclasses.replace(preset, **{f.name: f.default for f in dataclasses.fields(Preset)
                                          if f.name in BASELINE_FIELDS})


PRESETS: Dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is defined twice")
    PRESETS[preset.name] = preset
    return preset


# ------------------------------------------------------------------ the paper
# Every paper preset keeps the settings shared by all of the paper's benchmarks (MIND_SPEC.md,
# 'All: ...'): MINDConfig's defaults. CIFAR-100/10's schedule is MIND's default schedule.
register(Preset(
    name="cifar100",
    description="CIFAR-100/10 with the paper's settings (gated ResNet-32).",
    benchmark="cifar100",
    benchmark_kwargs=dict(n_experiences=10, seed=0),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=5),
))

register(Preset(
    name="tinyimagenet",
    description="TinyImageNet/10 (64x64) with the paper's settings (ResNet-32, stride-2 stem).",
    benchmark="tinyimagenet",
    benchmark_kwargs=dict(n_experiences=10, seed=0),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=5, stem_stride=2),
    mind=dict(teacher_epochs=100, teacher_milestones=(70, 90), train_epochs=120, milestones=(80, 110),
              temperature=12.0),
))

register(Preset(
    name="core50",
    description="CORe50 sessions as domains (64x64) with the paper's CORe50 settings.",
    benchmark="core50",
    benchmark_kwargs=dict(image_size=64),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=5, stem_stride=2),
    mind=dict(teacher_epochs=20, teacher_milestones=(15,), train_epochs=20, milestones=(15,), temperature=3.0),
))

_SYNBOLS = dict(teacher_epochs=25, teacher_milestones=(10, 20), train_epochs=25, milestones=(15,), temperature=4.0)
"""The paper's Synbols settings."""

register(Preset(
    name="glyphs",
    description="Glyphs, class-incremental, 100 classes / 10 experiences, with the paper's Synbols settings.",
    benchmark="glyphs",
    benchmark_kwargs=dict(n_experiences=10, n_classes=100, train_per_class=500, test_per_class=100, seed=0),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=5),
    mind=_SYNBOLS,
))

register(Preset(
    name="glyphs-domain",
    description="Glyphs, domain-incremental, 20 classes x 5 rendering styles, with the paper's Synbols settings.",
    benchmark="glyphs-domain",
    benchmark_kwargs=dict(n_domains=5, n_classes=20, train_per_class=500, test_per_class=100, seed=0),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=5),
    mind=_SYNBOLS,
))

# ------------------------------------------------------------------ CPU presets
_CPU_NOTE = (
    "CPU preset: far fewer images and epochs than the paper, and a small backbone instead of "
    "ResNet-32, so that all strategies finish in about 15 minutes on 2 CPU cores. Its numbers "
    "show the ranking of methods, not the paper's accuracies."
)
_CPU_MIND = dict(teacher_epochs=6, teacher_milestones=(4,), train_epochs=6, milestones=(5,), temperature=4.0,
                 train_mb_size=32, eval_mb_size=500)

register(Preset(
    name="glyphs-cpu",
    description="Glyphs, class-incremental, 100 classes / 10 experiences, reduced for 2 CPU cores.",
    benchmark="glyphs",
    benchmark_kwargs=dict(
        n_experiences=10, n_classes=100, train_per_class=150, test_per_class=20, image_size=16, seed=0
    ),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=1),
    mind=_CPU_MIND,
    # Chosen on a validation split of the training data: benchmarks/tuning/glyphs-cpu.json
    # (`compare --preset glyphs-cpu --tune`).
    lwf_alpha=4.0, lwf_temperature=2.0,
    ewc_lambda=100.0,
    si_lambda=100.0,
    packnet_lr=0.01, packnet_post_prune_epochs=3,
    notes=(_CPU_NOTE,),
))

register(Preset(
    name="glyphs-vit-cpu",
    description="Glyphs, class-incremental, 100 classes / 10 experiences, on a small Vision Transformer.",
    benchmark="glyphs",
    benchmark_kwargs=dict(
        n_experiences=10, n_classes=100, train_per_class=150, test_per_class=20, image_size=16, seed=0
    ),
    model="vit",
    model_kwargs=dict(image_size=16, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128),
    # Learning rates chosen on the validation split (seed 0; 0.001 against the ResNet's 0.005/0.035):
    # MIND's TAg 6.7 against 6.6 and 4.0, Joint's 5.5 against 4.0 (benchmarks/records/glyphs-vit-cpu-validation).
    mind={**_CPU_MIND, "lr": 0.001, "teacher_lr": 0.001},
    # The baselines keep the untuned defaults (no --tune search was run for this preset). Avalanche's
    # PackNet cannot wrap a ViT: its PackNetModel refuses modules with parameters of their own
    # (LayerNorm, the class token, nn.MultiheadAttention's in_proj_weight).
    notes=(_CPU_NOTE, "ViT: patch 4, 4 layers, width 64, 4 heads, MLP 128, no dropout; PackNet has no row "
           "(Avalanche's PackNetModel cannot wrap attention, LayerNorm or a class token)."),
))

register(Preset(
    name="glyphs-domain-cpu",
    description="Glyphs, domain-incremental, 20 classes x 5 styles, reduced for 2 CPU cores.",
    benchmark="glyphs-domain",
    benchmark_kwargs=dict(n_domains=5, n_classes=20, train_per_class=150, test_per_class=20, image_size=16, seed=0),
    model="resnet",
    model_kwargs=dict(blocks_per_stage=1),
    mind=_CPU_MIND,
    # Chosen on a validation split of the training data: benchmarks/tuning/glyphs-domain-cpu.json
    # (`compare --preset glyphs-domain-cpu --tune`).
    lwf_alpha=1.0, lwf_temperature=2.0,
    ewc_lambda=100.0,
    si_lambda=1.0,
    packnet_lr=0.005, packnet_post_prune_epochs=6,
    notes=(_CPU_NOTE,),
))

# Domain-incremental glyphs where fine-tuning forgets (README: "Benchmarks where
# fine-tuning forgets"): glyphs-domain-cpu's data sizes, model and schedule; the
# baselines' own hyperparameters searched on each one's validation split
# (`compare --preset glyphs-<kind>-cpu --tune`, recorded in benchmarks/tuning/), never inherited.
_FORGETTING_DOMAINS = {
    "glyphs-permuted": (
        "a fixed pixel permutation per domain (domain 0 unpermuted)",
        dict(lwf_alpha=1.0, lwf_temperature=2.0, ewc_lambda=1000.0, si_lambda=10.0,
             packnet_lr=0.005, packnet_post_prune_epochs=3),  # benchmarks/tuning/glyphs-permuted-cpu.json
    ),
    "glyphs-rotated": (
        "a fixed rotation per domain (0, 45, 90, 135, 180 degrees)",
        dict(lwf_alpha=4.0, lwf_temperature=2.0, ewc_lambda=10000.0, si_lambda=1.0,
             packnet_lr=0.005, packnet_post_prune_epochs=6),  # benchmarks/tuning/glyphs-rotated-cpu.json
    ),
    "glyphs-shift": (
        "a hard style shift per domain (clean, inverted, noisy, blurred, colour-swapped; polarity alternating)",
        dict(lwf_alpha=1.0, lwf_temperature=2.0, ewc_lambda=100.0, si_lambda=1.0,
             packnet_lr=0.005, packnet_post_prune_epochs=3),  # benchmarks/tuning/glyphs-shift-cpu.json
    ),
}
for _name, (_what, _tuned) in _FORGETTING_DOMAINS.items():
    register(dataclasses.replace(
        untuned(PRESETS["glyphs-domain-cpu"]),
        name=f"{_name}-cpu",
        description=f"Glyphs, domain-incremental, 20 classes x 5 domains, {_what}; reduced for 2 CPU cores.",
        benchmark=_name,
        **_tuned,
    ))

# ------------------------------------------------------------------ tests
_TINY_MIND = dict(teacher_epochs=1, teacher_milestones=(), train_epochs=1, milestones=(), temperature=2.0,
                  teacher_lr=0.01, lr=0.01, train_mb_size=16, eval_mb_size=64)

register(Preset(
    name="tiny",
    description="A seconds-long smoke configuration on the generated toy benchmark (tests only).",
    benchmark="toy",
    benchmark_kwargs=dict(n_experiences=3, classes_per_experience=2, per_class=16, test_per_class=8, image_size=16),
    model="small_cnn",
    model_kwargs=dict(width=4),
    mind=_TINY_MIND,
    packnet_groups=2,
    notes=("Tiny preset: a smoke test of the runner; its accuracies mean nothing.",),
))

register(Preset(
    name="tiny-domain",
    description="The tiny smoke configuration on the toy domain-incremental benchmark (tests only).",
    benchmark="toy-domain",
    benchmark_kwargs=dict(n_domains=3, n_classes=4, per_class=12, test_per_class=6, image_size=16),
    model="small_cnn",
    model_kwargs=dict(width=4),
    mind=_TINY_MIND,
    packnet_groups=2,
    notes=("Tiny preset: a smoke test of the runner; its accuracies mean nothing.",),
))


# ------------------------------------------------------------------ overrides
def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
