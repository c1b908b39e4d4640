"""MIND on transformers: every parameter accounted for, gated attention, per-experience LayerNorm, exact isolation."""
from __future__ import annotations

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torchvision.models import VisionTransformer

from avalanche_mind import MIND, gate_model, gresnet32, mind_metrics
from avalanche_mind.core.layers import GatedLinear, GatedMultiheadAttention
from avalanche_mind.core.snapshots import GATED, PER_EXPERIENCE, account_parameters
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.inference.bank import SubnetworkBank
from avalanche_mind.io.checkpoint import CheckpointPlugin, load_checkpoint

TINY = dict(teacher_epochs=1, train_epochs=1, train_mb_size=16, eval_mb_size=64, lr=0.01, teacher_lr=0.01)


def vit(n_classes=6):
    torch.manual_seed(0)
    return VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=n_classes)


class TokenTransformer(nn.Module):
    """A user's model on nn.TransformerEncoder: patch embedding, a learned token, the encoder, a head."""

    def __init__(self, n_classes=6, width=16):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.token = nn.Parameter(torch.zeros(1, 1, width))
        layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.token.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])


def sequential(n_classes=6):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, n_classes))


@pytest.mark.parametrize("build", [lambda: gresnet32(6), sequential, vit, TokenTransformer],
                         ids=["resnet", "sequential", "vit", "transformer-encoder"])
def test_every_parameter_is_gated_or_kept_per_experience(build):
    model = gate_model(build())
    kinds = account_parameters(model)
    assert set(kinds) == {name for name, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        module = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        gated = isinstance(module, GatedLinear | nn.Conv2d) and name.endswith("weight") and hasattr(module, "owner")
        assert kinds[name] == (GATED if gated else PER_EXPERIENCE), name
    attention = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert all(isinstance(m, GatedMultiheadAttention) for m in attention)
    if attention:  # the projections are gated layers; no raw projection parameter is left
        assert all(m.in_proj_weight is None and isinstance(m.out_proj, GatedLinear) for m in attention)
        assert sum(kind == GATED for kind in kinds.values()) > 2 * len(attention)


@pytest.mark.parametrize("layer, name", [(nn.Conv1d(3, 3, 1), "odd.weight"), (nn.Embedding(4, 3), "odd.weight"),
                                         (nn.LSTM(3, 3), "odd.weight_ih_l0")])
def test_a_parameter_mind_cannot_split_is_refused_before_training_naming_it(layer, name):
    model = sequential()
    model.odd = layer
    with pytest.raises(ValueError, match=f"cannot split these parameters between experiences: {name}"):
        MIND(model=model, n_experiences=2)


def test_gated_attention_computes_what_the_dense_one_does():
    torch.manual_seed(0)
    for kdim in (None, 5):
        dense = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True, bias=True).eval()
        q, kv = torch.randn(3, 4, 8), torch.randn(3, 6, kdim or 8)
        expected = dense(q, kv, kv)[0]
        model = nn.Sequential(dense, nn.Linear(8, 2))
        gate_model(model)
        assert isinstance(model[0], GatedMultiheadAttention)
        torch.testing.assert_close(model[0](q, kv, kv)[0], expected, rtol=0, atol=1e-6)


def _stream():
    return toy_class_incremental(n_experiences=3, classes_per_experience=2, per_class=20, test_per_class=5,
                                 image_size=16, seed=0)


def test_experience_0_stays_exact_with_attention_and_layernorm_trained_later():
    stream = _stream()
    mind = MIND(model=vit(), n_experiences=3, seed=0, evaluator=None, **TINY)
    x = torch.stack([stream.test_stream[0].dataset[i][0] for i in range(8)])
    first, attention = None, {}
    for experience in stream.train_stream:
        mind.train(experience)
        bank = SubnetworkBank(mind.model, mind.ownership, mind.state.bn_snapshots, mind.state.n_tasks, True)
        assert bank.mode == "module"  # LayerNorm's per-experience copies are not graph inputs: the module path
        mind.model.eval()
        with torch.no_grad():
            out = bank.logits(x, 0)
        first = out if first is None else first
        assert torch.equal(out, first)  # bit-identical after later experiences
        layer = mind.model.encoder.layers.encoder_layer_0.self_attention.in_proj
        attention[mind.state.n_tasks - 1] = layer.weight.detach().clone()
    # Later experiences trained attention weights of their own, and their own LayerNorm copies.
    owner = mind.model.encoder.layers.encoder_layer_0.self_attention.in_proj.owner
    for task in (1, 2):
        mine = owner == task
        assert mine.any() and not torch.equal(attention[task][mine], attention[task - 1][mine])
    key = "encoder.layers.encoder_layer_0.ln_1.weight"
    snaps = mind.state.bn_snapshots
    assert not torch.equal(snaps[0][key], snaps[2][key]) and not torch.equal(snaps[1][key], snaps[2][key])
    assert not torch.equal(snaps[0]["class_token"], snaps[2]["class_token"])


def test_a_resumed_vit_run_equals_the_uninterrupted_one(tmp_path):
    def build(plugins=()):
        evaluator = EvaluationPlugin(*mind_metrics(), loggers=[])
        return MIND(model=vit(), n_experiences=3, seed=0, evaluator=evaluator, plugins=list(plugins), **TINY)

    stream = _stream()
    uninterrupted = build()
    for experience in stream.train_stream:
        uninterrupted.train(experience)
    expected = uninterrupted.eval(stream.test_stream)

    path = tmp_path / "vit.pt"
    first = build([CheckpointPlugin(path)])
    first.train(stream.train_stream[0])
    torch.manual_seed(123)
    resumed = build()
    assert load_checkpoint(resumed, path).n_trained == 1
    for experience in stream.train_stream[1:]:
        resumed.train(experience)
    assert resumed.eval(stream.test_stream) == expected
    for (name, a), (_, b) in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_vit_exports_to_onnx_and_matches_the_predictor(tmp_path):
    pytest.importorskip("onnxruntime")
    from avalanche_mind.export import export_checkpoint
    from avalanche_mind.io.checkpoint import save_checkpoint

    stream = _stream()
    mind = MIND(model=vit(), n_experiences=3, seed=0, evaluator=None, **TINY)
    for experience in stream.train_stream[:2]:
        mind.train(experience)
    save_checkpoint(mind, tmp_path / "vit.pt")
    inputs = torch.stack([stream.test_stream[t].dataset[i][0] for t in range(2) for i in range(6)])
    for task in ("0", "all"):
        out = tmp_path / f"vit-{task}.onnx"
        # export_checkpoint runs the file back and compares it with the Predictor (or deletes it and raises).
        report = export_checkpoint(tmp_path / "vit.pt", vit(), out, format="onnx", task=task, inputs=inputs)
        assert out.is_file() and report.subnetwork_weights > 0
