"""What a newcomer reads: the learning rate in each epoch's line and a word when a short run's
schedule divides it, where TensorBoard writes, what --init and --freeze did, the data folder
recorded whole, tidy final numbers, a message on its own line above a progress bar, the
download-only command for a login node, and curves that leave out what never moved."""
import json
import os

import pytest
from conftest import run_cli

import train_baseline
import train_gan

TINY = ["--dataset", "digits", "--width", "4", "--amp", "off", "--subset", "128",
        "--batch_size", "32"]


@pytest.mark.slow
def test_each_epoch_says_its_rate_and_a_short_schedule_is_said(tmp_path, capsys):
    code, out, err = run_cli(train_baseline.main, TINY + ["--epochs", "2", "--out_dir",
                                                          str(tmp_path)], capsys)
    assert code == 0, err
    assert "note: the assignment's schedule, scaled to --epochs 2: from epoch 2 lr 1e-06" in err
    assert "epoch 1/2 lr 0.0001 " in err and "epoch 2/2 lr 1e-06 " in err
    settings = json.load(open(tmp_path / "baseline_config.json"))
    assert os.path.isabs(settings["data_dir"])  # read back from any working directory
    result = json.loads(out.splitlines()[-1])
    assert all(len(repr(v)) < 12 for v in result.values() if isinstance(v, float))


@pytest.mark.slow
def test_tensorboard_and_freeze_say_what_they_do(tmp_path, capsys):
    code, _, err = run_cli(train_gan.main, TINY + ["--epochs", "1", "--tensorboard",
                                                   "--out_dir", str(tmp_path / "g")], capsys)
    assert code == 0, err
    assert f"TensorBoard events: {tmp_path / 'g' / 'tensorboard' / 'gan'}" in err
    code, _, err = run_cli(train_baseline.main, TINY + ["--epochs", "1", "--freeze",
                                                        "--out_dir", str(tmp_path / "b")],
                           capsys)
    assert code == 0, err
    assert "--freeze: the blocks stay as they are" in err and "only fc10 trains, 50 parameters" in err  # 4 x 10 + 10


def test_download_only_fetches_and_trains_nothing(tmp_path, capsys):
    code, out, err = run_cli(train_gan.main, ["--dataset", "digits", "--download_only",
                                              "--out_dir", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["train"] == 1500 and "nothing trained" in err
    assert not (tmp_path / "run").exists()


def test_tidy_numbers_in_the_final_line(capsys):
    from utils.console import print_result

    print_result("x", dict(acc=28.00000011920929, n=3, nested={"f": 0.1 + 0.2}))
    assert json.loads(capsys.readouterr().out) == dict(script="x", acc=28.0, n=3,
                                                       nested={"f": 0.3})


def test_a_message_goes_on_its_own_line_above_a_progress_bar(monkeypatch):
    import tqdm

    from utils import console

    written = []
    monkeypatch.setattr(tqdm.tqdm, "write",
                        classmethod(lambda cls, s, file=None: written.append(s)))
    bar = tqdm.tqdm(total=3, disable=False)
    try:
        console.info("stopping after this step")
    finally:
        bar.close()
    assert written == ["stopping after this step"]


def test_curves_leave_out_a_figure_that_never_left_zero():
    from utils.pictures import curves_figure

    records = [dict(epoch=e, d_loss=1.0 / e, gp=0.0, w_dist="damaged") for e in (1, 2, 3)]
    fig = curves_figure(records, [("losses", ["d_loss"]), ("penalty", ["gp"]),
                                  ("distance", ["w_dist"])], "t")
    assert [ax.get_title() for ax in fig.axes if ax.lines] == ["losses"]
