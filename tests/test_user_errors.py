"""Issue 19: every error a user can cause is one line on stderr and exit status 2, in every command; and the
defects of the second reliability round (huge learning rates, extreme inputs, edited checkpoints, typos)."""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from avalanche_mind import MIND, cli, small_cnn
from avalanche_mind.io.checkpoint import _digest
from test_cli import TINY


def run_cli(argv, capsys):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> bool:
    return "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    assert cli.main(["train", *TINY, "--checkpoint", str(path)]) == 0
    return path


def edited(checkpoint, folder, key):
    """A copy of ``checkpoint`` without ``key`` (``a.b``: inside ``a``), its digest recomputed as an editor would."""
    payload = torch.load(checkpoint, weights_only=True)
    body = dict(payload["body"])
    outer, _, inner = key.partition(".")
    if inner:
        body[outer] = {k: v for k, v in body[outer].items() if k != inner}
    else:
        del body[outer]
    path = folder / f"without-{key}.pt"
    torch.save({**payload, "body": body, "digest": _digest(body)}, path)
    return path


# ---------------------------------------------------------------- every command
def cases(tmp, checkpoint):
    blocker = tmp / "a-file"
    blocker.write_text("")
    garbage = tmp / "garbage"
    garbage.mkdir()
    (garbage / "results.json").write_text("{not json")
    missing = edited(checkpoint, tmp, "mind_state")
    wandb = ["--wandb", "--wandb-mode", "offline", "--wandb-project", "team/proj"]
    return {
        "train typo": (["train", "--model", "gresnet"], "invalid choice: 'gresnet'"),
        "train wandb project": (["train", *TINY, *wandb], "a team goes in --wandb-entity"),
        "evaluate edited checkpoint": (["evaluate", missing], "lacks entries this avalanche-mind reads"),
        "export edited checkpoint": (["export", missing, "--out", tmp / "m.pt"], "mind_state"),
        "export json unwritable": (["export", checkpoint, "--out", tmp / "m.pt", "--json", blocker / "r.json"],
                                   f"--json {blocker / 'r.json'} cannot be written"),
        "compare unknown benchmark": (["compare", "--tiny", "--benchmark", "glyph"], "unknown --benchmark 'glyph'"),
        "compare benchmark setting": (["compare", "--tiny", "--set", "benchmark_kwargs.bogus=1"],
                                      "benchmark 'toy' refuses its settings"),
        "compare wandb project": (["compare", "--tiny", *wandb], "a team goes in --wandb-entity"),
        "compare ray unreachable": (["compare", "--tiny", "--ray", "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
        "compare ray malformed": (["compare", "--tiny", "--ray", "ray://head"], "is not a Ray address"),
        "compare resume-from nothing": (["compare", "--tiny", "--resume-from", tmp / "none"], "no runs are recorded"),
        "tune unknown benchmark": (["compare", "--tiny", "--tune", "--strategies", "ewc", "--benchmark", "glyph"],
                                   "unknown --benchmark"),
        "redraw damaged results": (["compare", "--redraw", garbage], "is not a comparison's results.json"),
    }


CASES = ["train typo", "train wandb project", "evaluate edited checkpoint", "export edited checkpoint",
         "export json unwritable", "compare unknown benchmark", "compare benchmark setting", "compare wandb project", "compare ray unreachable",
         "compare ray malformed", "compare resume-from nothing", "tune unknown benchmark", "redraw damaged results"]


@pytest.mark.parametrize("case", CASES)
def test_every_command_reports_a_user_error_in_one_line_with_status_2(checkpoint, tmp_path, capsys, monkeypatch,
                                                                      case):
    monkeypatch.setattr(MIND, "train", lambda *a, **k: pytest.fail("trained despite the error"))
    argv, message = cases(tmp_path, checkpoint)[case]
    code, out, err = run_cli(argv, capsys)
    assert code == 2, err
    assert one_line(err) and message in err, err
    assert not (tmp_path / "m.pt").exists()  # export: nothing made in vain


@pytest.mark.parametrize("key", ["hyperparameters", "n_trained", "model", "mind_state.slices", "optimizer"])
def test_edited_checkpoints_are_refused_by_evaluate_and_export(checkpoint, tmp_path, capsys, key):
    path = edited(checkpoint, tmp_path, key)
    for argv in (["evaluate", path], ["export", path, "--out", tmp_path / "m.pt"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2 and one_line(err) and "lacks entries this avalanche-mind reads" in err and key in err, err


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("option", ["--lr", "--teacher-lr"])
def test_a_huge_finite_learning_rate_is_reported_as_divergence(tmp_path, capsys, option):
    code, out, err = run_cli(["train", *TINY, option, "1e38"], capsys)
    assert code == 1 and one_line(err), err
    assert err.startswith("avalanche-mind train: error: training diverged: an optimizer step overflowed float32 "
                          "in experience 0")


def test_resume_refusal_gives_the_command_line_way(checkpoint, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run.pt"
    shutil.copy(checkpoint, copy)
    code, out, err = run_cli(["train", *TINY, "--beta", "3", "--checkpoint", copy, "--resume"], capsys)
    assert code == 2 and one_line(err), err
    assert "strict=False" not in err and "Build MIND" not in err
    assert "beta" in err and "resume with the interrupted run's options" in err


def test_a_failed_first_save_does_not_say_there_is_no_checkpoint_option(tmp_path, capsys, monkeypatch):
    import avalanche_mind.io.checkpoint as checkpoint

    def too_large(*args, **kwargs):  # what torch.save does under a file-size limit (ulimit -f)
        try:
            raise OSError(errno.EFBIG, "File too large")
        finally:  # its zip writer's exit fails in turn
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", too_large)
    ckpt = tmp_path / "run.pt"
    code, out, err = run_cli(["train", *TINY, "--checkpoint", ckpt], capsys)
    assert code == 2 and one_line(err), err
    assert err.startswith(f"avalanche-mind train: error: could not write {ckpt}: File too large; no checkpoint was "
                          f"written yet ({ckpt} does not exist); after freeing space, resume with: ")
    assert not list(tmp_path.iterdir())  # no temporary file, no lock left


def test_dist_timeout_reaches_the_process_group(monkeypatch):
    from avalanche_mind.core import distributed
    from avalanche_mind.cli import train

    class Stop(BaseException):
        pass

    def init(seed, device, timeout):
        raise Stop(timeout)

    monkeypatch.setattr(train, "init_from_environment", init)
    with pytest.raises(Stop) as stopped:
        cli.main(["train", *TINY, "--dist-timeout", "42"])
    assert stopped.value.args == (42.0,)
    assert cli.build_parser().parse_args(["train", "--benchmark", "toy"]).dist_timeout == distributed.DEFAULT_TIMEOUT_S
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed._helper, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed.DistributedHelper, "init_distributed",
                        lambda seed, backend, use_cuda: distributed._helper.init_process_group(backend=backend))
    distributed.init_from_environment(0, "cpu", 42.0)
    assert calls == [{"backend": "gloo", "timeout": __import__("datetime").timedelta(seconds=42)}]


# ---------------------------------------------------------------- predictor
def test_predictor_refuses_what_it_cannot_predict(checkpoint):
    from avalanche_mind.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, small_cnn(6, width=6))
    with pytest.raises(ValueError, match=r"outputs are NaN or infinite for 4 of 4 input\(s\) \(largest \|input\| 1e\+38\)"):
        predictor.predict(torch.full((4, 3, 12, 12), 1e38))
    with pytest.raises(ValueError, match="outputs are NaN or infinite"):
        predictor.predict(torch.full((4, 3, 12, 12), 1e38), task=0)
    with pytest.raises(ValueError, match="inputs must be floating point, .* got torch.uint8"):
        predictor.predict(torch.zeros(4, 3, 12, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"inputs have 1 channels \(shape \[4, 1, 12, 12\]\), the model's first layer "
                                         "takes 3"):
        predictor.predict(torch.rand(4, 1, 12, 12))
    assert predictor.predict(torch.rand(4, 3, 12, 12)).classes.shape == (4,)


# ---------------------------------------------------------------- export
def test_export_keeps_usual_permissions_and_refuses_another_input_shape(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["export", checkpoint, "--out", out, "--task", "0", "--quiet"], capsys)
    assert code == 0, err
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask == checkpoint.stat().st_mode & 0o777
    code, _, err = run_cli(["export", checkpoint, "--out", tmp_path / "big.pt", "--input-shape", "3,64,64"], capsys)
    assert code == 2 and one_line(err)
    assert "--input-shape 3,64,64 is not the shape" in err and "(3,12,12)" in err


# ---------------------------------------------------------------- glyph cache
def test_glyph_cache_with_inconsistent_lengths_is_rendered_again(tmp_path):
    from avalanche_mind.data import glyphs

    chars = list(glyphs.CHARACTERS[:2])
    kwargs = dict(train_per_class=2, test_per_class=1, seed=0, root=tmp_path)
    first = glyphs.load_glyph_arrays(chars, **kwargs)
    path = next(tmp_path.rglob("*.npz"))
    with np.load(path) as f:
        arrays = dict(f)
    arrays["y_train"] = arrays["y_train"][:-1]  # one label lost
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.warns(UserWarning, match=f"glyph cache {path} is unreadable .*3 labels"):
        again = glyphs.load_glyph_arrays(chars, **kwargs)
    assert all(np.array_equal(first[k], again[k]) for k in first)
