"""The settings are resolved once by a command into typed, frozen objects (utils/settings.py,
utils/figures/options.py) and a checkpoint written before the change still resumes."""
import dataclasses
import json
import shutil

import pytest
from conftest import ROOT, run_cli

import train_baseline
import train_gan
import visualize
from utils.figures.options import FigureOptions
from utils.settings import Settings

OLD = f"{ROOT}/tests/fixtures/checkpoints_96e3222"  # written by main at 96e3222, before the change
TINY = ["--dataset", "digits", "--width", "4", "--batch_size", "64", "--amp", "off"]


def test_every_setting_has_one_home_and_none_is_dropped():
    s = train_gan.resolve(["--recipe", "wgan-clip", "--width", "8"])
    assert (s.model.arch, s.model.width, s.gan.loss, s.gan.clip, s.gan.gp_weight) == (
        "dcgan", 8, "wgan", 0.01, 0.0)  # the loss family's defaults resolved
    assert (s.optim.optimizer, s.optim.lr, s.data.batch_size, s.loop.epochs) == (
        "rmsprop", 5e-5, 64, 100)
    flat = s.flat()
    assert flat["clip"] == 0.01 and flat["recipe"] == "wgan-clip"
    assert len(flat) == len(vars(train_gan.parse_args([])))  # every flag, once
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.gan.loss = "gan"
    with pytest.raises(TypeError, match="no home: lerning_rate"):  # a misspelt name
        Settings.resolve(dict(train_baseline.resolve([]).flat(), lerning_rate=1),
                         train_baseline.BaselineOptions)


def test_the_width_of_the_family_is_resolved_and_saved():
    assert train_baseline.resolve([]).model.width == 196
    assert train_gan.resolve(["--arch", "mlp"]).model.width == 256
    assert train_gan.resolve(["--arch", "mlp"]).flat()["width"] == 256


def test_each_figure_has_its_own_flags_and_the_defaults_agree():
    assert visualize.resolve(["all"]) == FigureOptions(figure="all")  # one set of defaults
    for figure in visualize.FIGURES:
        assert visualize.resolve([figure]) == FigureOptions(figure=figure), figure
    perturb = visualize.figure_parser("perturb")._option_string_actions
    assert "--gain" in perturb and "--steps" not in perturb and "--runs" not in perturb
    assert "--steps" in visualize.figure_parser("max-class")._option_string_actions
    assert visualize.resolve(["max-features", "--layers", "2", "4"]).layers == (2, 4)


def test_visualize_help_says_what_all_makes(capsys):
    code, out, _ = run_cli(visualize.main, ["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "all: perturb, max-class, max-features and samples" in text and "then report" in text


@pytest.mark.slow
@pytest.mark.parametrize("kind,script,argv,expected", [
    ("baseline", train_baseline, [], dict(test_acc=15.49, train_acc=13.38)),
    ("gan", train_gan, ["--subset", "256"], dict(test_acc=9.43, d_loss=12.225)),
])
def test_a_checkpoint_of_the_earlier_main_resumes(kind, script, argv, expected, tmp_path,
                                                  capsys):
    """The checkpoints main wrote at 96e3222 (one epoch, on digits) resume to epoch 2 with
    the figures that main's own resumption gave."""
    shutil.copy(f"{OLD}/{kind}.ckpt", tmp_path / f"{kind}.ckpt")
    code, out, err = run_cli(script.main, TINY + argv + ["--epochs", "2", "--resume",
                                                         "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err
    assert "resuming" in err and "at epoch 2" in err
    last = [json.loads(line) for line in open(tmp_path / f"{kind}_log.jsonl")][-1]
    for key, value in expected.items():
        assert last[key] == pytest.approx(value, abs=2e-3), key
