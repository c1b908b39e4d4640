"""MIND's phases: calls out of order are refused with a clear PhaseError, and nothing is left half-done."""
import pytest
import torch
from avalanche.core import SupervisedPlugin
from helpers import make_mind
from torch.optim import SGD

from avalanche_mind.core.phase import Phase, PhaseGuard
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.errors import PhaseError

TINY = dict(teacher_epochs=1, train_epochs=1)


@pytest.fixture(scope="module")
def stream():
    return toy_class_incremental(n_experiences=2, classes_per_experience=2, per_class=20, test_per_class=5)


def test_the_guard_allows_the_procedure_and_refuses_the_rest():
    guard = PhaseGuard()
    for phase in (Phase.TEACHER, Phase.DISTILL, Phase.IDLE):
        guard.enter(phase)
    with guard.evaluating():
        assert guard.phase is Phase.EVAL
        with pytest.raises(PhaseError, match="evaluation is already running"):
            guard.enter(Phase.EVAL)
    assert guard.phase is Phase.IDLE
    guard.enter(Phase.TEACHER)
    with pytest.raises(PhaseError, match="teacher phase.*no sub-network yet"):
        guard.enter(Phase.EVAL)
    with pytest.raises(PhaseError):
        guard.enter(Phase.TEACHER)


def test_eval_during_the_teacher_phase_is_refused_and_the_experience_undone(stream):
    holder = {}

    def teacher_optimizer(params):
        phases.append(holder["mind"].phase)
        holder["mind"].eval(stream.test_stream[:1])  # e.g. a plugin or callback evaluating too early
        return SGD(params, lr=0.01)

    phases = []
    mind = make_mind(n_classes=4, n_experiences=2, teacher_optimizer=teacher_optimizer, **TINY)
    holder["mind"] = mind
    before = {k: v.clone() for k, v in mind.model.state_dict().items()}
    with pytest.raises(PhaseError, match="cannot evaluate .*during its teacher phase"):
        mind.train(stream.train_stream[0])
    assert phases == [Phase.TEACHER]
    # Rolled back: no task registered, the weights as before, and the strategy usable again.
    assert mind.phase is Phase.IDLE and mind.state.n_tasks == 0
    assert all(torch.equal(before[k], v) for k, v in mind.model.state_dict().items())


def test_a_second_train_mid_phase_is_refused(stream):
    class TrainAgain(SupervisedPlugin):
        seen = None

        def after_training_iteration(self, strategy, **kwargs):
            self.seen = strategy.phase
            strategy.train(strategy.experience)

    plugin = TrainAgain()
    mind = make_mind(n_classes=4, n_experiences=2, plugins=[plugin], **TINY)
    with pytest.raises(PhaseError, match="cannot start train\\(\\) during its distill phase"):
        mind.train(stream.train_stream[0])
    assert plugin.seen is Phase.DISTILL
    assert mind.phase is Phase.IDLE and mind.state.n_tasks == 0
    mind.plugins.remove(plugin)
    mind.train(stream.train_stream[0])  # the same experience trains once the failed call is undone
    assert mind.state.n_tasks == 1 and mind.phase is Phase.IDLE


def test_periodic_eval_during_distillation_returns_to_it(stream):
    class EvalEachEpoch(SupervisedPlugin):
        phases = []

        def after_training_epoch(self, strategy, **kwargs):
            self.phases.append(strategy.phase)
            strategy.eval(stream.test_stream[:1])
            self.phases.append(strategy.phase)

    class NestedEval(SupervisedPlugin):
        error = None

        def after_eval_exp(self, strategy, **kwargs):
            assert strategy.phase is Phase.EVAL
            try:
                strategy.eval(stream.test_stream[:1])
            except PhaseError as error:
                NestedEval.error = error

    mind = make_mind(n_classes=4, n_experiences=2, plugins=[EvalEachEpoch(), NestedEval()], **TINY)
    mind.train(stream.train_stream[0])
    assert EvalEachEpoch.phases == [Phase.DISTILL, Phase.DISTILL]
    assert "evaluation is already running" in str(NestedEval.error)
    assert mind.phase is Phase.IDLE


def test_loading_a_state_mid_phase_is_refused(stream):
    class LoadMidway(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            strategy.load_state_dict(saved)

    mind = make_mind(n_classes=4, n_experiences=2, **TINY)
    saved = mind.state_dict()
    mind.plugins.append(LoadMidway())
    with pytest.raises(PhaseError, match="cannot load a state during its distill phase"):
        mind.train(stream.train_stream[0])
    assert mind.phase is Phase.IDLE and mind.state.n_tasks == 0
