"""A trainer's run folder (utils/rundir.py): a resume writes only into its own run or an
empty folder, an --overwrite killed before its first checkpoint leaves the earlier run whole,
a replacement cut short is finished by the next start, and the TensorBoard events follow the
JSON log through --overwrite and a resume."""
import hashlib
import json
import os
import shutil

import pytest
from conftest import DIGITS_JITTER, last_line, run_cli, train

import train_baseline
import train_gan
from utils import files
from utils.rundir import RunFolder, read_records

TINY = ["--dataset", "digits", "--width", "8", "--batch_size", "32", "--lr", "2e-3",
        "--log_every", "1000", "--amp", "off", *DIGITS_JITTER]  # fp32: bf16 is slower at width 8


def digest(folder):
    """Every file's bytes under folder (the lock file aside): what 'untouched' means."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            if not (n.startswith(".cnn_gan") and n.endswith(".lock")):
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, folder)] = hashlib.sha1(open(p, "rb").read()).hexdigest()
    return out


@pytest.mark.slow
def test_resume_writes_only_into_its_own_run_or_an_empty_folder(folder, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train(folder, a, capsys, "--epochs", "2")[0] == 0
    assert train(folder, b, capsys, "--epochs", "1")[0] == 0
    before = digest(b)
    code, _, err = train(folder, b, capsys, "--epochs", "2", "--resume", str(a / "baseline.ckpt"))
    assert "holds another run" in last_line(code, err)
    assert digest(b) == before
    code, _, err = train(folder, c, capsys, "--epochs", "2", "--resume", str(a / "baseline.ckpt"))
    assert code == 0, err  # an empty folder takes the resumed run


def test_overwrite_killed_before_its_first_checkpoint_leaves_the_earlier_run_whole(
        folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train(folder, out, capsys, "--epochs", "1")[0] == 0
    before = digest(out)

    def crash(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(train_baseline.BaselineTrainer, "step", crash)
    with pytest.raises(RuntimeError):
        train(folder, out, capsys, "--epochs", "1", "--lr", "5e-4", "--overwrite")
    monkeypatch.undo()
    staged = {f for f in digest(out) if f.endswith(".staged")}
    assert staged and {k: v for k, v in digest(out).items() if k not in staged} == before
    # the next start removes the staged leftovers; a finished --overwrite leaves the new run
    code, _, err = train(folder, out, capsys, "--epochs", "1", "--lr", "5e-4", "--overwrite")
    assert code == 0, err
    assert json.load(open(out / "baseline_config.json"))["lr"] == 5e-4
    assert not [f for f in os.listdir(out) if f.startswith(".baseline")]


def test_a_replacement_cut_short_is_finished_by_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("baseline.ckpt", "cifar10.model", "baseline_curves.png"):
        (out / name).write_text("the earlier run's")
    (out / ".baseline_config.json.staged").write_text("{}")
    (out / "baseline_config.json").write_text("the earlier run's")
    plan = {"remove": ["baseline.ckpt", "cifar10.model", "baseline_curves.png",
                       "baseline_config.json"],
            "rename": [[".baseline_config.json.staged", "baseline_config.json"]]}
    files.atomic_write_json(str(out / ".baseline.replace.json"), plan)
    os.remove(out / "baseline.ckpt")  # the crash came after the first removal
    RunFolder(str(out), "baseline", ("cifar10.model",)).take().release()
    assert sorted(os.listdir(out)) == ["baseline_config.json"]
    assert (out / "baseline_config.json").read_text() == "{}"


# ----------------------------------------------------------------------------- TensorBoard

def _tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard" / "gan"))
    events.Reload()
    return events


@pytest.mark.slow
def test_tensorboard_holds_the_logs_scalars_and_the_grids(tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--subset", "96", "--log_every", "1", "--tensorboard", "--out_dir", str(out)]
    code, _, err = run_cli(train_gan.main, argv + ["--epochs", "2"], capsys)
    assert code == 0, err
    events, log = _tensorboard(out), read_records(out / "gan_log.jsonl")
    steps = [r for r in log if r["event"] == "step"]
    logged = [e.value for e in events.Scalars("step/d_loss")]
    assert logged == pytest.approx([r["d_loss"] for r in steps], rel=1e-6)
    assert [e.step for e in events.Scalars("epoch/test_acc")] == [3, 6]  # 3 steps an epoch
    assert len(events.Images("samples")) == 2

    # --overwrite: the earlier run's events go with its other files
    code, _, err = run_cli(train_gan.main, argv + ["--epochs", "1", "--seed", "1",
                                                   "--overwrite"], capsys)
    assert code == 0, err
    assert len(os.listdir(out / "tensorboard" / "gan")) == 1
    steps = [r for r in read_records(out / "gan_log.jsonl") if r["event"] == "step"]
    assert [e.value for e in _tensorboard(out).Scalars("step/d_loss")] == \
        pytest.approx([r["d_loss"] for r in steps], rel=1e-6)

    # a resume from a checkpoint older than the last events (a crash after them) hides them
    shutil.copy(out / "gan.ckpt", tmp_path / "epoch1.ckpt")
    assert run_cli(train_gan.main, argv + ["--epochs", "2", "--seed", "1", "--resume"],
                   capsys)[0] == 0
    shutil.copy(tmp_path / "epoch1.ckpt", out / "gan.ckpt")
    assert run_cli(train_gan.main, argv + ["--epochs", "2", "--seed", "1", "--resume"],
                   capsys)[0] == 0
    log = [r for r in read_records(out / "gan_log.jsonl") if r["event"] == "step"]
    shown = _tensorboard(out).Scalars("step/d_loss")
    assert [e.step for e in shown] == [(r["epoch"] - 1) * 3 + r["step"] for r in log] == \
        list(range(1, 7))
    assert [e.value for e in shown] == pytest.approx([r["d_loss"] for r in log], rel=1e-6)
