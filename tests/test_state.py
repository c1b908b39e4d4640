"""MINDState's saved form: BatchNorm snapshots stacked, read back exactly (and old lists still read)."""
import pytest
import torch

from avalanche_mind.core.state import MINDState, snapshot_count


def _state(n_tasks: int) -> MINDState:
    state = MINDState()
    for task in range(n_tasks):
        state.slices.append([2 * task, 2 * task + 1])
        state.experience_ids.append(task)
        state.bn_snapshots.append({
            "bn.weight": torch.randn(4), "bn.running_var": torch.rand(4),
            "bn.num_batches_tracked": torch.tensor(10 * task),
        })
    return state


def test_snapshots_are_stacked_and_read_back_exactly():
    state = _state(3)
    saved = state.state_dict()
    assert saved["n_bn_snapshots"] == 3
    assert saved["bn_snapshots"]["bn.weight"].shape == (3, 4)
    loaded = MINDState()
    loaded.load_state_dict(saved)
    assert loaded.slices == state.slices and loaded.experience_ids == state.experience_ids
    for mine, theirs in zip(loaded.bn_snapshots, state.bn_snapshots):
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_list_form_and_empty_state_load():
    state = _state(2)
    listed = {**state.state_dict(), "bn_snapshots": [dict(s) for s in state.bn_snapshots]}
    loaded = MINDState()
    loaded.load_state_dict(listed)
    assert torch.equal(loaded.bn_snapshots[1]["bn.weight"], state.bn_snapshots[1]["bn.weight"])
    empty = MINDState()
    empty.load_state_dict(MINDState().state_dict())
    assert empty.n_tasks == 0 and empty.bn_snapshots == []


def test_snapshot_rows_that_disagree_with_the_count_are_refused():
    saved = _state(3).state_dict()
    saved["n_bn_snapshots"] = 2
    with pytest.raises(ValueError, match="does not hold 2 experiences"):
        snapshot_count(saved)
