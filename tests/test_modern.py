"""Beyond the lessons: the tools of a modern GAN baseline, each off by default, through the one
training loop: an EMA generator, DiffAugment, spectral norm, precision and recall, the best
checkpoint, TensorBoard."""
import copy
import json
import os
import shutil

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from conftest import DIGITS_JITTER, run_cli

import train_gan
import visualize
from models import discriminator
from recipes import RECIPES
from utils import quality
from utils.checkpoints import load_model
from utils.diffaug import DiffAugment, parse_policy
from utils.gan import ema_update
from utils.rundir import read_records

TINY = ["--dataset", "digits", "--width", "8", "--batch_size", "32", "--lr", "2e-3",
        "--log_every", "1000", "--amp", "off", *DIGITS_JITTER]  # fp32: bf16 is slower at width 8
MODERN = ["--ema", "0.9", "--diffaugment", "color,translation,cutout", "--spectral_norm", "on"]


def test_ema_follows_its_closed_form():
    """After updates to weights w_1..w_N, ema = beta^N w_0 + (1 - beta) sum beta^(N-t) w_t;
    buffers are the model's own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema, beta = copy.deepcopy(model), 0.9
    w0, ws = model[0].weight.detach().clone(), []
    for _ in range(7):
        with torch.no_grad():
            model[0].weight.add_(torch.randn(4, 3))
        model.train()(torch.randn(5, 3))  # moves BatchNorm's running statistics
        ws.append(model[0].weight.detach().clone())
        ema_update(ema, model, beta)
    n = len(ws)
    expected = beta ** n * w0 + sum((1 - beta) * beta ** (n - t) * w for t, w in enumerate(ws, 1))
    assert torch.allclose(ema[0].weight, expected, atol=1e-6)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_diffaugment_is_differentiable_and_the_same_per_sample_or_batched():
    assert parse_policy("cutout,color") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown"):
        parse_policy("colour")
    aug = DiffAugment("color,translation,cutout")
    x = (torch.rand(6, 3, 32, 32) * 2 - 1).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    p = aug.sample(6, 32, 32, g)
    out = aug.apply(x, p)
    out.square().sum().backward()  # the generator's gradient flows through every transform
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for i in range(6):  # image i alone with its own draws: what the batch gave it
        one = aug.apply(x[i:i + 1].detach(), {k: v[i:i + 1] for k, v in p.items()})
        assert torch.allclose(one, out[i:i + 1].detach(), atol=1e-6)
    # each transform does what it says
    img = torch.arange(16.).view(1, 1, 4, 4)
    shifted = DiffAugment("translation").apply(img, {"shift_y": torch.tensor([1]),
                                                     "shift_x": torch.tensor([0])})
    assert torch.equal(shifted[0, 0, 1:], img[0, 0, :3]) and (shifted[0, 0, 0] == 0).all()
    cut = DiffAugment("cutout").apply(torch.ones(1, 1, 32, 32), {"cut_y": torch.tensor([16]),
                                                                  "cut_x": torch.tensor([16])})
    assert (cut == 0).sum() == 16 * 16 and cut[0, 0, 16, 16] == 0 and cut[0, 0, 0, 0] == 1
    assert DiffAugment("off")(x, g) is x


def test_spectral_norm_bounds_every_layer_of_every_family():
    for family, channels, size in (("ie534", 3, 32), ("dcgan", 3, 32), ("mlp", 1, 28),
                                   ("infogan", 1, 28)):
        torch.manual_seed(0)
        d = discriminator(family, 8, 10, channels, size, spectral_norm=True).train()
        for _ in range(30):  # power iterations, one per forward pass in training
            d(torch.randn(4, channels, size, size))
        layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert layers and all(hasattr(m, "parametrizations") for m in layers), family
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
            assert 0.9 < sigma < 1.1, (family, m, sigma)


def _state(path):
    ckpt = torch.load(path, weights_only=True)
    return {k: ckpt[k] for k in ("generator", "generator_ema", "discriminator")}


@pytest.mark.slow
def test_resume_with_ema_diffaugment_and_spectral_norm_is_bit_equal(tmp_path, capsys):
    argv = TINY + MODERN + ["--subset", "128", "--epochs", "2"]
    a, b, stop = str(tmp_path / "a"), str(tmp_path / "b"), tmp_path / "STOP"
    assert run_cli(train_gan.main, argv + ["--out_dir", a], capsys)[0] == 0
    stop.touch()
    assert run_cli(train_gan.main, argv + ["--out_dir", b, "--stop_file", str(stop)],
                   capsys)[0] == 75
    stop.unlink()
    assert run_cli(train_gan.main, argv + ["--out_dir", b, "--resume"], capsys)[0] == 0
    sa, sb = _state(os.path.join(a, "gan.ckpt")), _state(os.path.join(b, "gan.ckpt"))
    for part in sa:
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part
    assert any("_u" in k for k in sa["discriminator"])  # the power iteration's state resumed
    assert not torch.equal(sa["generator"]["fc1.weight"], sa["generator_ema"]["fc1.weight"])
    # the moving average is what the figures sample
    code, _, err = run_cli(visualize.main, ["samples", "--run_dir", b, "--out_dir",
                                            str(tmp_path / "vis")], capsys)
    assert code == 0, err
    summary = json.load(open(tmp_path / "vis" / "summary.json"))
    assert summary["samples"]["made_from"]["generator"]["file"] == "generator_ema.model"


@pytest.mark.slow
def test_precision_and_recall_point_the_right_way(mnist_judge, mnist_dir):
    """Fakes that are all one class: precision high (each is a real-looking digit), recall low
    (most real digits have no fake near them)."""
    from utils.data import load_dataset

    data = load_dataset("mnist", mnist_dir)
    real = data.test_x[:2000]
    ones = data.train_x[data.train_y == 1][:500]
    got = quality.evaluate(ones, None, real, None, ["cprc"], classifier=mnist_judge[1])
    assert got["precision"] > 0.8 and got["recall"] < 0.3, got
    every = quality.evaluate(data.train_x[:2000], None, real, None, ["cprc"],
                             classifier=mnist_judge[1])
    assert every["precision"] > 0.8 and every["recall"] > 0.8, every
    assert 0 < got["f_score"] < every["f_score"]


def _scripted_quality(values):
    def make(args, data, runtime, classes):
        it = iter(values)
        return lambda G: {"cfid": next(it)}
    return make


@pytest.mark.slow
@pytest.mark.parametrize("values, best_epoch", [([5.0, 7.0], 1), ([7.0, 5.0], 2)])
def test_keep_best_keeps_the_better_evaluation(values, best_epoch, digits_baseline, tmp_path,
                                               capsys, monkeypatch):
    argv = TINY + ["--subset", "96", "--eval_every", "1", "--eval_metrics", "cfid",
                   "--eval_classifier", digits_baseline[0], "--keep_best", "cfid"]
    reference = str(tmp_path / f"epochs{best_epoch}")
    assert run_cli(train_gan.main, TINY + ["--subset", "96", "--epochs", str(best_epoch),
                                           "--out_dir", reference], capsys)[0] == 0
    monkeypatch.setattr(train_gan, "sample_quality", _scripted_quality(values))
    out = tmp_path / "run"
    code, _, err = run_cli(train_gan.main, argv + ["--epochs", "2", "--out_dir", str(out)], capsys)
    assert code == 0, err
    best, ckpt = load_model(str(out / "generator_best.model"), "generator", "")
    assert ckpt["metrics"] == {"cfid": min(values), "epoch": best_epoch}
    same, _ = load_model(os.path.join(reference, "generator.model"), "generator", "")
    assert all(torch.equal(a, b) for a, b in zip(best.state_dict().values(),
                                                 same.state_dict().values()))
    code, _, err = run_cli(train_gan.main, TINY + ["--keep_best", "fid", "--out_dir",
                                                   str(tmp_path / "x")], capsys)
    assert code == 2 and "--eval_every" in err


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


def test_the_modern_recipe_combines_them():
    a = SimpleNamespace(**train_gan.resolve(["--recipe", "cnn-gan-modern"]).flat())
    assert (a.arch, a.loss, a.spectral_norm, a.ema, a.diffaugment, a.acgan, a.gp_weight) == \
        ("ie534", "hinge", "on", 0.999, "color,translation,cutout", "on", 0.0)
    for name, recipe in RECIPES.items():  # the lessons' recipes leave every tool off
        if name != "cnn-gan-modern":
            assert not {"ema", "diffaugment", "spectral_norm"} & set(recipe.defaults), name


@pytest.mark.slow
def test_the_moving_average_is_warmed_up_and_follows_a_short_run(tmp_path, capsys):
    """At 0.999 from the first step, 300 steps would leave 74% of the random initial weights
    in the average (the ablation's 10-epoch run: cfid 500, 10.6% of fakes their class). Warmed
    up as TensorFlow's num_updates, min(beta, (1 + t) / (10 + t)), it stays near the trained
    generator."""
    from models import generator
    from utils.gan import ema_beta
    from utils.runtime import seed_everything

    assert ema_beta(0.999, 0) == pytest.approx(0.1)
    assert ema_beta(0.999, 90) == pytest.approx(0.91)
    assert ema_beta(0.999, 10**6) == 0.999 and ema_beta(0.5, 100) == 0.5
    out = tmp_path / "run"
    argv = TINY + ["--arch", "mlp", "--ema", "0.999", "--subset", "960", "--epochs", "10",
                   "--seed", "0", "--out_dir", str(out)]  # the fully connected pair: fast
    assert run_cli(train_gan.main, argv, capsys)[0] == 0  # 300 iterations
    ckpt = torch.load(os.path.join(out, "gan.ckpt"), weights_only=True)
    g, ema, settings = ckpt["generator"], ckpt["generator_ema"], ckpt["settings"]
    seed_everything(settings["seed"])  # the initial generator, as build_gan makes it
    init = generator(settings["arch"], settings["latent_dim"], settings["width"], 3, 32)
    init = init.state_dict()
    weights = [k for k in g if g[k].is_floating_point() and g[k].dim() > 1]
    to_trained = sum((ema[k] - g[k]).norm() ** 2 for k in weights) ** 0.5
    trained_moved = sum((g[k] - init[k]).norm() ** 2 for k in weights) ** 0.5
    assert to_trained < 0.5 * trained_moved, (to_trained, trained_moved)
