"""The self-distillation variant holds one network: the teacher is the model's FREE capacity."""
from __future__ import annotations

from avalanche.core import SupervisedPlugin

from helpers import make_mind, stream_metric


class ParameterCounter(SupervisedPlugin):
    """Counts parameters held by model and teacher at the peak: during distillation."""

    def __init__(self):
        super().__init__()
        self.peak = 0

    def before_training_iteration(self, strategy, **kwargs):
        held = {id(p): p.numel() for p in strategy.model.parameters()}
        teacher = strategy.teacher_plugin.teacher
        if teacher is not None:
            held.update({id(p): p.numel() for p in teacher.parameters()})
        recorded = strategy.teacher_plugin.recorded_logits
        extra = recorded.numel() if recorded is not None else 0
        self.peak = max(self.peak, sum(held.values()) + extra)


def _peak(class_incremental, self_distillation):
    counter = ParameterCounter()
    strategy = make_mind(self_distillation=self_distillation, plugins=[counter], teacher_epochs=4, train_epochs=4)
    for experience in class_incremental.train_stream[:2]:
        strategy.train(experience, eval_streams=[])
    model_params = sum(p.numel() for p in strategy.model.parameters())
    return counter.peak, model_params, strategy


def test_self_distillation_keeps_one_network(class_incremental):
    peak, model_params, strategy = _peak(class_incremental, self_distillation=True)
    assert peak <= 1.05 * model_params
    results = strategy.eval(class_incremental.test_stream[:2])
    assert stream_metric(results, "Top1_TAw_Acc_Stream") >= 0.8


def test_default_teacher_is_a_second_network(class_incremental):
    peak, model_params, _ = _peak(class_incremental, self_distillation=False)
    assert peak >= 1.9 * model_params  # the paper's MIND: 0.94M held for a 0.47M model
