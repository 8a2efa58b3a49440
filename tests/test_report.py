"""What a newcomer meets: a report that tells the truth about one run and fits it, Part 2 for
every recipe, Ctrl-C that keeps the work, training longer, and the small things."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import DIGITS_JITTER, ROOT, pdf_text, run_cli
from PIL import Image

import metrics
import train_baseline
import train_gan
import train_simclr
import visualize
from utils.pictures import save_grid
from utils.rundir import read_records

FAST = ["--steps", "5", "--max_gain", "2", "--n_features", "4"]
TINY = ["--dataset", "digits", "--width", "8", "--batch_size", "64", "--lr", "2e-3",
        "--log_every", "1000", *DIGITS_JITTER]


@pytest.fixture
def run_copy(digits_baseline, digits_gan, tmp_path):
    """A run folder holding both discriminators and the generator, with every figure made."""
    run = tmp_path / "run"
    shutil.copytree(digits_gan[0], run, ignore=shutil.ignore_patterns("visualization"))
    shutil.copy(digits_baseline[0], run / "cifar10.model")
    return run


@pytest.mark.slow
def test_the_report_shows_only_figures_of_the_models_in_the_run(run_copy, tmp_path, capsys):
    run = run_copy
    assert run_cli(visualize.main, ["all", "--run_dir", str(run), "--layers", "2", *FAST],
                   capsys)[0] == 0
    summary = json.load(open(run / "visualization" / "summary.json"))
    made = summary["perturb_baseline"]["made_from"]["baseline"]
    assert made["file"] == "cifar10.model" and len(made["digest"]) == 16  # within the run
    assert summary["max_features_gan_layer2_steps5_nfeatures4"]["files"] == [
        "max_features_gan_layer2_steps5_nfeatures4.png"]
    # the classifier is retrained (--overwrite) in place: its figures are now out of date
    code, _, err = run_cli(train_baseline.main, TINY + ["--epochs", "1", "--out_dir", str(run),
                                                        "--overwrite"], capsys)
    assert code == 0, err
    code, out, err = run_cli(visualize.main, ["report", "--run_dir", str(run)], capsys)
    assert code == 0, err
    assert "out of date, left out" in err and "baseline discriminator" in err
    text = pdf_text((run / "visualization" / "report.pdf").read_bytes())
    assert "out of date: real, gradient and altered images" in text
    assert f"python visualize.py perturb --run_dir {run}" in text
    new_acc = torch.load(run / "cifar10.model", weights_only=True)["metrics"]["test_acc"]
    assert f"test accuracy {new_acc}%" in text  # the title quotes the model now in the run
    stale = [line for line in err.splitlines() if "out of date" in line]
    # the baseline's perturbation, max-class and layer-2 figures, and the samples page (its
    # agreement figure came from the earlier classifier); the GAN's figures stay
    assert len(stale) == 4 and not any("gan" in line for line in stale), stale


@pytest.mark.slow
def test_the_report_fits_an_unconditional_run_and_all_works_for_every_recipe(mnist_dir,
                                                                            tmp_path, capsys):
    run = tmp_path / "dcgan"
    code, _, err = run_cli(train_gan.main, [
        "--recipe", "cs231n-dcgan", "--data_dir", mnist_dir, "--subset", "640", "--width", "8",
        "--batch_size", "64", "--epochs", "2", "--out_dir", str(run), "--log_every", "1000"],
        capsys)
    assert code == 0, err
    code, out, err = run_cli(visualize.main, ["all", "--run_dir", str(run), *FAST], capsys)
    assert code == 0, err
    assert "perturb: skipped" in err and "max-class: skipped" in err  # no class head
    assert "baseline discriminator: skipped" in err  # the run has no cifar10.model
    vis = run / "visualization"
    # the network's own layers (infogan's discriminator has 3 blocks), not the assignment's
    assert sorted(f for f in os.listdir(vis) if f.startswith("max_features")) == [
        f"max_features_gan_layer{k}_steps5_nfeatures4.png" for k in (1, 2, 3)]
    pages = json.loads(out.splitlines()[-1])["pages"]
    assert not any("column c" in p or "Perturbed" in p or "each class" in p for p in pages)
    text = pdf_text((vis / "report.pdf").read_bytes())
    assert "gan (infogan networks) on mnist" in text and "unconditional" in text
    assert "within a class" not in text and "missing" not in err.replace(
        "missing sample-quality", "")  # nothing that cannot exist is listed as missing


def test_nothing_to_report_is_an_error(tmp_path, capsys):
    for figure in ("report", "all"):
        code, _, err = run_cli(visualize.main, [figure, "--run_dir", str(tmp_path / "nope")],
                               capsys)
        assert code == 2 and err.count("\n") == 1 and "does not exist" in err, err
        assert not (tmp_path / "nope").exists()
        code, _, err = run_cli(visualize.main, [figure, "--run_dir", str(tmp_path)], capsys)
        assert code == 2 and "holds no model file" in err, err
        assert not (tmp_path / "visualization").exists()


@pytest.mark.slow
def test_the_report_is_small_and_draws_its_curves(run_copy, capsys):
    run = run_copy
    assert run_cli(visualize.main, ["all", "--run_dir", str(run), "--layers", "8", *FAST],
                   capsys)[0] == 0
    pdf = (run / "visualization" / "report.pdf").read_bytes()
    assert len(pdf) < 1_500_000, len(pdf)  # measured 0.9 MB here; 4.9 MB before
    assert pdf.count(b"/DCTDecode") >= 10  # its pictures as JPEG
    text = pdf_text(pdf)
    assert text.count("Training curves: wgan-gp (ie534 networks, ACGAN) on digits") == 1
    assert "discriminator scores" in text  # the curves are text and lines, not a picture


def test_grids_name_their_columns_and_mark_a_column(tmp_path):
    images = torch.zeros(4, 3, 8, 8)
    save_grid(images, tmp_path / "labelled.png", nrow=2, labels=["cat", "dog"])
    a = np.asarray(Image.open(tmp_path / "labelled.png"))
    assert a.shape == (2 * 20 + 4 + 14, 2 * 20 + 4, 3)  # a 14-pixel strip of names below
    assert (a[-14:] < 128).any() and (a[-14:] >= 250).mean() > 0.7  # dark letters on white
    save_grid(images, tmp_path / "marked.png", nrow=2, mark_column=0)
    a = np.asarray(Image.open(tmp_path / "marked.png")).astype(int)
    red = (a[..., 0] > 200) & (a[..., 1] < 80)
    assert red[:, :24].any() and not red[:, 26:].any()  # the first column framed, only it


# ----------------------------------------------------------------------------- interrupted work

def _popen(out, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "train_baseline.py"), *TINY, "--epochs", "40",
           "--log_every", "1", "--out_dir", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(p):
    for line in p.stderr:
        if " step " in line:
            return


@pytest.mark.slow
def test_ctrl_c_stops_with_a_checkpoint_and_a_second_one_at_once(tmp_path):
    once, twice = _popen(tmp_path / "a"), _popen(tmp_path / "b")  # started together
    try:
        _wait_for_steps(once)
        once.send_signal(signal.SIGINT)
        _, err = once.communicate(timeout=60)
        assert once.returncode == 130, err
        assert "Ctrl-C: stopping after this step" in err and "resume with --resume" in err
        ckpt = torch.load(tmp_path / "a" / "baseline.ckpt", weights_only=True)
        assert ckpt["epoch"] * 100 + ckpt["step"] > 0  # the interrupted epoch's work is kept
        _wait_for_steps(twice)
        twice.send_signal(signal.SIGINT)
        twice.send_signal(signal.SIGINT)
        _, err = twice.communicate(timeout=60)
        assert twice.returncode == 130 and "Traceback" not in err, err
        assert "resume with --resume" in err.strip().splitlines()[-1], err
    finally:  # a failed assertion leaves no trainer behind
        for p in (once, twice):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_the_log_resumes_where_the_checkpoint_was(tmp_path, capsys):
    out, stop = tmp_path / "run", tmp_path / "STOP"
    stop.touch()
    argv = TINY + ["--subset", "256", "--epochs", "2", "--log_every", "1", "--out_dir", str(out)]
    assert run_cli(train_baseline.main, argv + ["--stop_file", str(stop)], capsys)[0] == 75
    stop.unlink()
    with open(out / "baseline_log.jsonl", "a") as f:  # what a crash after the checkpoint left
        f.write(json.dumps({"event": "step", "epoch": 1, "step": 2, "loss": 9}) + "\n")
        f.write('{"event": "step", "epo')  # and a line cut short
    assert run_cli(train_baseline.main, argv + ["--resume"], capsys)[0] == 0
    records = read_records(out / "baseline_log.jsonl")
    steps = [(r["epoch"], r["step"]) for r in records if r["event"] == "step"]
    assert steps == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4)]
    assert [r for r in records if r["event"] == "resume"] == [
        {"event": "resume", "epoch": 1, "step": 1}]
    assert all(r.get("loss") != 9 for r in records)


@pytest.mark.slow
def test_training_longer_is_allowed_and_equals_a_longer_run(tmp_path, capsys):
    argv = TINY + ["--subset", "256"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(train_baseline.main, argv + ["--epochs", "2", "--out_dir", a], capsys)[0] == 0
    assert run_cli(train_baseline.main, argv + ["--epochs", "1", "--out_dir", b], capsys)[0] == 0
    code, _, err = run_cli(train_baseline.main, argv + ["--epochs", "2", "--out_dir", b,
                                                        "--resume"], capsys)
    assert code == 0 and "training longer: --epochs 1 -> 2" in err, err
    # the schedule follows the new length (lr / 10 at half of it, / 100 at three quarters):
    # epoch 1 had the full rate either way, so the two runs end equal
    ma, mb = (torch.load(os.path.join(d, "baseline.ckpt"), weights_only=True)["model"]
              for d in (a, b))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    code, _, err = run_cli(train_baseline.main, argv + ["--epochs", "1", "--out_dir", b,
                                                        "--resume"], capsys)
    assert code == 2 and "has trained 2 epochs already" in err
    # a speed flag may change on resume, and the line says what that costs
    code, _, err = run_cli(train_baseline.main, argv + ["--epochs", "3", "--out_dir", b,
                                                        "--resume", "--amp", "off"], capsys)
    assert code == 0 and "--amp auto -> off: allowed" in err and "bit for bit" in err, err


# ----------------------------------------------------------------------------- the small things

@pytest.mark.parametrize("module", [train_baseline, train_gan, train_simclr, visualize, metrics])
def test_help_shows_every_default(module):
    parsers = ([module.figure_parser(f) for f in module.FIGURES] if module is visualize
               else [module.build_parser()])
    for parser in parsers:
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in formatter._get_help_string(action), action.dest
    text = parsers[0].format_help()
    assert "(default: 0)" in text or "(default: 0.0)" in text  # --seed or the like, shown


@pytest.mark.slow
def test_the_gan_evaluates_with_the_classifier_beside_it(digits_baseline, tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--subset", "128", "--epochs", "1", "--out_dir", str(out), "--eval_every", "1",
                   "--eval_metrics", "cfid,cacc", "--eval_samples", "60"]
    code, _, err = run_cli(train_gan.main, argv, capsys)
    assert code == 2 and "--eval_classifier" in err and "--classifier" not in err
    out.mkdir(exist_ok=True)
    shutil.copy(digits_baseline[0], out / "cifar10.model")
    code, stdout, err = run_cli(train_gan.main, argv, capsys)
    assert code == 0, err
    result = json.loads(stdout.splitlines()[-1])
    last = read_records(out / "gan_log.jsonl")[-1]
    assert "cfid" in last and "cacc" in last and last["eval_samples"] == 60
    # the evaluation's time is counted apart from training's (a fast machine may take < 0.05 s)
    assert result["eval_seconds"] == round(last["eval_seconds"], 1) and "seconds" in result


@pytest.mark.slow
def test_metrics_json_names_what_was_used_and_numbers_are_tidy(digits_baseline, digits_gan,
                                                               tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_gan[0], run)
    code, _, err = run_cli(metrics.main, [str(run), "--metrics", "cfid", "--classifier",
                                          digits_baseline[0], "--n_samples", "50"], capsys)
    assert code == 0, err
    result = json.load(open(run / "metrics.json"))
    assert "extractor" not in result and result["classifier"] == digits_baseline[0]
    assert set(result["made_from"]) == {"generator.model", "cifar10.model"}
    assert run_cli(visualize.main, ["perturb", "--model", "gan", "--run_dir", str(run),
                                    "--max_gain", "1"], capsys)[0] == 0
    summary = json.load(open(run / "visualization" / "summary.json"))
    numbers = [v for k, v in summary["perturb_gan"].items() if isinstance(v, float) and k != "time"]
    assert numbers and all(v == float(f"{v:.6g}") for v in numbers), numbers  # 6 digits


@pytest.mark.slow
def test_init_reads_the_encoders_width(tmp_path, capsys):
    enc = tmp_path / "simclr"
    assert run_cli(train_simclr.main, ["--dataset", "digits", "--width", "8", "--epochs", "1",
                                       "--batch_size", "64", "--subset", "128", "--out_dir",
                                       str(enc), "--log_every", "1000"], capsys)[0] == 0
    out = tmp_path / "probe"
    code, _, err = run_cli(train_baseline.main, TINY[:2] + ["--epochs", "1", "--subset", "128",
                                                            "--init", str(enc / "simclr.model"),
                                                            "--out_dir", str(out)], capsys)
    assert code == 0, err
    assert json.load(open(out / "baseline_config.json"))["width"] == 8


def test_a_data_folder_one_level_off_is_said_and_nothing_is_created(mnist_dir, tmp_path,
                                                                     monkeypatch):
    import torchvision
    from urllib.error import URLError

    from utils.data import DataError, load_dataset

    def offline(*a, **k):
        raise URLError("no network")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    inner = tmp_path / "data" / "MNIST"  # the user points at the dataset's own folder
    inner.mkdir(parents=True)
    before = sorted(os.listdir(tmp_path / "data"))
    with pytest.raises(DataError, match=re.escape("looks like the dataset's own folder")):
        load_dataset("mnist", str(inner))
    assert sorted(os.listdir(tmp_path / "data")) == before and os.listdir(inner) == []
    with pytest.raises(DataError, match="MNIST/raw/train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists()  # a missing --data_dir is not created


def test_page_one_lists_each_classs_accuracy_and_the_training_mode_figure():
    from utils.figures.report import accuracy_details

    lines = accuracy_details({"test_acc": 90.0, "test_acc_train_mode": 88.5,
                              "test_acc_per_class": {"cat": 81.25, "dog": None, "ship": 95.0}})
    assert lines == ["  by class: cat 81.2%, dog -, ship 95.0%",
                     "  tested in training mode (BatchNorm on each test batch's own "
                     "statistics): 88.5%"]
    assert accuracy_details({"test_acc": 90.0}) == []  # a model file from before: nothing
    assert accuracy_details({"test_acc_per_class": ["not", "a", "dict"]}) == []


@pytest.mark.slow
def test_the_report_names_a_damaged_file_and_the_command_that_remakes_it(run_copy, capsys):
    """A valid summary.json of the wrong shape, a record of the wrong shape, a picture cut
    short: each said in a line naming the file and the command that remakes it, never a
    traceback or a page silently missing its figure."""
    run, vis = run_copy, run_copy / "visualization"
    assert run_cli(visualize.main, ["perturb", "--run_dir", str(run), "--max_gain", "2"],
                   capsys)[0] == 0
    summary = json.load(open(vis / "summary.json"))
    png = vis / summary["perturb_baseline"]["files"][0]
    png.write_bytes(png.read_bytes()[:200])  # a picture cut short
    summary["perturb_gan"]["files"] = "perturb_gan.png"  # a record of the wrong shape
    (vis / "summary.json").write_text(json.dumps(summary))
    grid = sorted((run / "output").glob("*.png"))[-1]
    grid.write_bytes(b"not a picture")  # a grid a crash cut short
    code, out, err = run_cli(visualize.main, ["report", "--run_dir", str(run)], capsys)
    assert code == 0, err
    remake = f"python visualize.py perturb --run_dir {run}"
    assert "damaged, left out" in err and str(png) in err and remake in err, err
    assert "its record in summary.json" in err and str(grid) in err
    text = pdf_text((vis / "report.pdf").read_bytes())
    assert "damaged" in text and "Traceback" not in err
    (vis / "summary.json").write_text("[1, 2]")  # valid JSON, the wrong shape
    code, _, err = run_cli(visualize.main, ["report", "--run_dir", str(run)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "summary.json is damaged: it should hold an object, not list" in err
    assert f"python visualize.py all --run_dir {run}" in err


def test_the_commands_it_suggests_can_be_pasted_into_a_shell(tmp_path):
    import shlex

    from utils.errors import UserError
    from utils.figures.report import Report

    run = tmp_path / "my run's"
    (run / "visualization").mkdir(parents=True)
    (run / "visualization" / "summary.json").write_text("[1, 2]")
    with pytest.raises(UserError) as e:
        Report(str(run), str(run / "visualization"), {})
    command = str(e.value).split("remake the figures: ")[1]
    assert shlex.split(command) == ["python", "visualize.py", "all", "--run_dir", str(run)]


@pytest.mark.slow
def test_page_one_states_the_runs_scale_and_fits_an_unconditional_gan(digits_gan, tmp_path,
                                                                     capsys):
    run = tmp_path / "run"
    argv = TINY + ["--acgan", "off", "--subset", "128", "--epochs", "1", "--out_dir", str(run)]
    assert run_cli(train_gan.main, argv, capsys)[0] == 0
    code, _, err = run_cli(visualize.main, ["report", "--run_dir", str(run)], capsys)
    assert code == 0, err
    text = " ".join(pdf_text((run / "visualization" / "report.pdf").read_bytes()).split())
    assert "None%" not in text and "no class head" in text
    assert "digits, ie534 width 8, 128 training images (--subset), 1 epochs of the lesson's 200" \
        in text
