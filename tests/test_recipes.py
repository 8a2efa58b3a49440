"""Every lesson's GAN by name: its settings, that it learns digits on the real MNIST, and that
the WGAN (clipping, RMSprop, critic steps) and GAN recipes resume exactly."""
import collections
import json
import os

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

import train_baseline
import train_gan
import train_simclr
import visualize
from recipes import RECIPES, recipe_values
from utils.gan import GanSpec


def resolved(argv):
    """train_gan's settings resolved from a command line, flat, by flag name."""
    return SimpleNamespace(**train_gan.resolve(argv).flat())


def test_a_recipe_sets_the_lessons_defaults_and_flags_still_win():
    a = resolved(["--recipe", "cs231n-gan"])
    assert (a.arch, a.loss, a.dataset, a.acgan, a.noise, a.latent_dim) == \
        ("mlp", "gan", "mnist", "off", "uniform", 96)
    assert (a.optimizer, a.lr, a.beta1, a.beta2, a.batch_size, a.epochs) == \
        ("adam", 1e-3, 0.5, 0.999, 128, 10)
    assert (a.gp_weight, a.clip, a.augment) == (0.0, 0.0, "none")
    a = resolved(["--recipe", "cs231n-gan", "--lr", "5e-4", "--loss", "hinge"])
    assert (a.lr, a.loss, a.arch) == (5e-4, "hinge", "mlp")
    w = resolved(["--recipe", "wgan-clip"])
    assert (w.loss, w.clip, w.optimizer, w.lr, w.gen_train, w.batch_size, w.gp_weight) == \
        ("wgan", 0.01, "rmsprop", 5e-5, 5, 64, 0.0)
    assert vars(resolved([])) == vars(resolved(["--recipe", "ie534"]))
    ie = resolved([])
    assert (ie.loss, ie.gp_weight, ie.acgan, ie.lr, ie.beta1, ie.beta2, ie.latent_dim) == \
        ("wgan-gp", 10.0, "on", 1e-4, 0.0, 0.9, 100)
    assert resolved(["--recipe", "cs231n-dcgan"]).arch == "infogan"
    assert resolved(["--recipe", "udacity-dcgan-svhn"]).dataset == "svhn"
    assert set(RECIPES) >= {"ie534", "cs231n-gan", "cs231n-lsgan", "cs231n-dcgan",
                            "udacity-dcgan-svhn", "wgan-clip"}


# ----------------------------------------------------------------------------- they learn

# Each recipe as the lesson has it, trained briefly: fewer steps than the lessons (250 to
# 1,900), batch 64, and for the convolutional networks width 16 (half the lessons' channels)
# so that all of them fit in the test suite's time on two cores; wgan-clip's learning rate is
# ten times the paper's 5e-5, which needs far more steps than a test can take. ie534 is the
# trainer's default (test_default_recipe_is_the_assignment); that it learns is
# test_gan.test_acgan_fakes_are_recognised_as_their_class (on digits: its MNIST run here took
# 50 s, 95% of fakes recognised).
BRIEF = {
    "cs231n-gan": ["--batch_size", "64", "--subset", "30000", "--epochs", "2"],
    "cs231n-lsgan": ["--batch_size", "64", "--subset", "30000", "--epochs", "2"],
    "cs231n-dcgan": ["--width", "16", "--batch_size", "64", "--subset", "16000", "--epochs", "1"],
    "udacity-dcgan-svhn": ["--dataset", "mnist", "--width", "16", "--batch_size", "64",
                           "--subset", "32000", "--epochs", "1"],
    "wgan-clip": ["--dataset", "mnist", "--width", "16", "--lr", "5e-4", "--subset", "32000",
                  "--epochs", "2"],
}
# Fraction of 500 exported fakes the judge gives a top probability of at least 0.5 (five times
# chance), and how many classes those cover. An untrained generator of any family scores 0%;
# uniform noise images 15%, all of one class.
# Measured in fp32 with the lessons' own optimizer and order (seeds 0, 1, 2 on this machine;
# bf16, this CPU's default since, passes too; another CPU's rounding is in effect another
# seed): cs231n-gan 72-79% / 10 classes, cs231n-dcgan 85-89% / 10, udacity-dcgan-svhn
# 66-72% / 10, wgan-clip 74-79% / 10 (the fully connected networks with Xavier's start, before
# they went back to PyTorch's default, as the notebook has them, and for 1,874 steps: since,
# they train 937, on 30,000 images, to keep the suite under 10 minutes). cs231n-lsgan learns its
# digits (76-94%) but its variety comes and goes: seeds 0-3 covered 3, 8, 10 and 9 classes,
# and one more epoch collapsed seed 0 to a single class; so its classes are not asserted.
CONFIDENT, AT_LEAST = 0.5, 0.5
CLASSES = {"cs231n-lsgan": 1}  # the others: at least 8 of the 10


def read_pngs(folder):
    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    arrays = [np.asarray(Image.open(os.path.join(folder, n))) for n in names]
    x = torch.from_numpy(np.stack(arrays)).float().div(127.5).sub(1)  # (N, 28, 28) in [-1, 1]
    return names, x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(BRIEF))
def test_each_recipe_learns_digits(recipe, mnist_dir, mnist_judge, tmp_path, capsys):
    run, fakes = tmp_path / "run", tmp_path / "fakes"
    code, out, err = run_cli(train_gan.main, ["--recipe", recipe, "--data_dir", mnist_dir,
                                              *BRIEF[recipe], "--out_dir", str(run),
                                              "--log_every", "1000"], capsys)
    assert code == 0, err
    settings = json.load(open(run / "gan_config.json"))
    assert settings["recipe"] == recipe and settings["dataset"] == "mnist"
    assert settings["arch"] == RECIPES[recipe].defaults["arch"] and settings["acgan"] == "off"
    code, _, err = run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", "500",
                                            "--out_dir", str(fakes)], capsys)
    assert code == 0, err
    names, x = read_pngs(fakes)
    assert x.shape == (500, 1, 28, 28) and names[0] == "00000.png"
    with torch.no_grad():
        p = mnist_judge[0](x)[1].softmax(1)
    confidence, predicted = p.max(1)
    sure = confidence >= CONFIDENT
    found = set(predicted[sure].tolist())
    assert sure.float().mean() >= AT_LEAST and len(found) >= CLASSES.get(recipe, 8), \
        (sure.float().mean().item(), sorted(found))


# ----------------------------------------------------------------------------- exact resume

@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["wgan-clip", "cs231n-gan"])
def test_recipe_resumes_exactly_from_a_mid_epoch_stop(recipe, mnist_dir, tmp_path, capsys):
    """Stopped after the first step (a stop file present from the start: with wgan-clip the
    generator has trained once and the critic once), resumed, equal to an uninterrupted run:
    weights, RMSprop's or Adam's state, and every logged figure."""
    stop = tmp_path / "STOP"
    argv = ["--recipe", recipe, "--data_dir", mnist_dir, "--dataset", "mnist", "--subset", "640",
            "--batch_size", "64", "--epochs", "2", "--width", "8", "--log_every", "1000",
            "--stop_file", str(stop)]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(train_gan.main, argv + ["--out_dir", a], capsys)[0] == 0
    stop.touch()
    code, _, err = run_cli(train_gan.main, argv + ["--out_dir", b], capsys)
    assert code == 75, err
    assert torch.load(os.path.join(b, "gan.ckpt"), weights_only=True)["step"] == 1
    stop.unlink()
    assert run_cli(train_gan.main, argv + ["--out_dir", b, "--resume"], capsys)[0] == 0
    ca, cb = (torch.load(os.path.join(d, "gan.ckpt"), weights_only=True) for d in (a, b))
    for key in ("generator", "discriminator"):
        assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key]), key
    for key in ("opt_g", "opt_d"):
        for i, state in ca[key]["state"].items():
            assert all(torch.equal(v, cb[key]["state"][i][k]) for k, v in state.items()
                       if torch.is_tensor(v)), key
    timing = ("seconds", "images_per_s", "peak_mib")
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing}  # noqa: E731
                       for r in h]
    assert strip(ca["history"]) == strip(cb["history"])
    if recipe == "wgan-clip":  # the critic's weights stay clipped, through the resumption too
        assert max(v.abs().max().item() for k, v in cb["discriminator"].items()
                   if "running" not in k and "num_batches" not in k) <= 0.01


# ----------------------------------------------------------------------------- outputs

@pytest.fixture(scope="module")
def unconditional_run(mnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("uncond")
    train_gan.main(["--recipe", "cs231n-gan", "--data_dir", mnist_dir, "--subset", "256",
                    "--epochs", "1", "--out_dir", str(run), "--log_every", "1000"])
    return run


@pytest.mark.slow
def test_export_names_and_counts(unconditional_run, digits_gan, tmp_path, capsys):
    out = tmp_path / "plain"  # a new folder (test_export: never over files it did not write)
    code, stdout, err = run_cli(visualize.main, ["export", "--run_dir", str(unconditional_run),
                                                 "--n", "23", "--out_dir", str(out)], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out)) == [".cnn_gan_export.json"] + [f"{i:05d}.png"
                                                                  for i in range(23)]
    assert Image.open(out / "00000.png").size == (28, 28)
    assert json.loads(stdout.splitlines()[-1])["export"]["n"] == 23
    run, _ = digits_gan  # class-conditional: balanced over the classes, the class in the name
    cond = tmp_path / "conditional"
    assert run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", "35",
                                    "--out_dir", str(cond)], capsys)[0] == 0
    names = sorted(f for f in os.listdir(cond) if f.endswith(".png"))
    assert names == [f"{i:05d}_c{i % 10}.png" for i in range(35)]
    counts = collections.Counter(n.split("_c")[1] for n in names)
    assert set(counts.values()) == {3, 4}  # 35 over 10 classes: as even as it gets
    assert Image.open(cond / names[0]).mode == "RGB"


def test_samples_of_an_unconditional_generator_and_no_class_head(unconditional_run, tmp_path,
                                                                  capsys):
    code, _, err = run_cli(visualize.main, ["samples", "--run_dir", str(unconditional_run),
                                            "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err
    cell = 30 * 2  # 28 pixels and 2 of gap, drawn twice as large
    assert Image.open(tmp_path / "samples_seed0.png").size == (10 * cell + 4, 10 * cell + 4)
    for figure in ("perturb", "max-class"):
        code, _, err = run_cli(visualize.main, [figure, "--model", "gan", "--run_dir",
                                                str(unconditional_run)], capsys)
        assert code == 2 and err.count("\n") == 1 and "class head" in err, err
    code, _, err = run_cli(visualize.main, ["samples", "--classes", "3", "--run_dir",
                                            str(unconditional_run)], capsys)
    assert code == 2 and "unconditional" in err


# Every optimizer setting of each lesson, in full: the optimizer, its rate, both betas and
# epsilon (Adam), alpha, epsilon and momentum (RMSprop), momentum (SGD), weight decay.
ADAM = dict(eps=1e-8, weight_decay=0, amsgrad=False, maximize=False)
OPTIMIZERS = {
    "ie534": ("Adam", dict(lr=1e-4, betas=(0.0, 0.9), **ADAM)),
    "cs231n-gan": ("Adam", dict(lr=1e-3, betas=(0.5, 0.999), **ADAM)),
    "cs231n-lsgan": ("Adam", dict(lr=1e-3, betas=(0.5, 0.999), **ADAM)),
    "cs231n-dcgan": ("Adam", dict(lr=1e-3, betas=(0.5, 0.999), **ADAM)),
    "udacity-dcgan-svhn": ("Adam", dict(lr=2e-4, betas=(0.5, 0.999), **ADAM)),
    "wgan-clip": ("RMSprop", dict(lr=5e-5, alpha=0.99, eps=1e-8, momentum=0, centered=False,
                                  weight_decay=0)),
    "cnn-gan-modern": ("Adam", dict(lr=2e-4, betas=(0.0, 0.9), **ADAM)),
}


@pytest.mark.parametrize("recipe", list(OPTIMIZERS))
def test_each_recipes_optimizers_are_its_lessons_in_every_setting(recipe):
    from utils.gan import build_gan
    from utils.runtime import Runtime

    assert set(OPTIMIZERS) == set(RECIPES)
    settings = train_gan.resolve(["--recipe", recipe, "--width", "4"])
    _, opt_g, opt_d = build_gan(settings, 0, Runtime(torch.device("cpu")), channels=1,
                                image_size=28)
    kind, expected = OPTIMIZERS[recipe]
    for opt in (opt_g, opt_d):  # both networks alike
        assert type(opt).__name__ == kind
        group = opt.param_groups[0]
        for key, value in expected.items():
            assert group[key] == (tuple(value) if isinstance(value, tuple) else value), (
                recipe, key)


def test_the_classifiers_and_simclrs_optimizers_in_every_setting():
    import torch.nn as nn

    import train_baseline
    import train_simclr
    from utils.runtime import Runtime

    rt = Runtime(torch.device("cpu"))
    params = [nn.Parameter(torch.zeros(1))]
    for argv, kind, expected in (
            ([], "Adam", dict(lr=1e-4, betas=(0.9, 0.999), **ADAM)),
            (["--recipe", "udacity-batchnorm"], "SGD",
             dict(lr=0.01, momentum=0, dampening=0, nesterov=False, weight_decay=0))):
        o = train_baseline.resolve(argv).optim
        opt = rt.optimizer(o.optimizer, params, o.lr)
        assert type(opt).__name__ == kind, argv
        assert {k: opt.param_groups[0][k] for k in expected} == expected, argv
    o = train_simclr.resolve([]).optim  # seed 004's code: Adam 1e-3, weight decay 1e-6
    opt = rt.adam(params, lr=o.lr, weight_decay=o.weight_decay)
    assert {k: opt.param_groups[0][k] for k in ("lr", "betas", "eps", "weight_decay")} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-6)


# ------------------------------------------------------------------ what each lesson's recipe sets

LESSONS = {"ie534": (1024, "off"), "cs231n-gan": (0, "on"), "cs231n-lsgan": (0, "on"),
           "cs231n-dcgan": (0, "on"), "udacity-dcgan-svhn": (0, "on"), "wgan-clip": (0, "on"),
           "cnn-gan-modern": (0, "on")}  # the project's own: plain Adam, the critic first


def test_each_recipe_resolves_its_lessons_optimizer_and_order():
    assert set(LESSONS) == set(RECIPES)
    for recipe, (cap, d_first) in LESSONS.items():
        a = train_gan.resolve(["--recipe", recipe])
        assert (a.optim.adam_step_cap, a.gan.d_first) == (cap, d_first), recipe
        spec = GanSpec.of(a)
        assert (spec.step_cap, spec.d_first) == (cap, d_first == "on"), recipe
        assert (recipe_values(recipe)["adam_step_cap"], recipe_values(recipe)["d_first"]) == (
            cap, d_first)
    assert train_gan.parse_args(["--recipe", "cs231n-gan", "--adam_step_cap", "1024",
                                 "--d_first", "off"]).adam_step_cap == 1024  # flags still win
    assert train_baseline.parse_args([]).adam_step_cap == 1024  # the assignment's classifier
    assert train_simclr.parse_args([]).adam_step_cap == 0  # SimCLR: plain Adam
    assert train_baseline.parse_args(["--recipe", "udacity-batchnorm"]).optimizer == "sgd"


def test_the_modern_recipe_combines_them():
    a = SimpleNamespace(**train_gan.resolve(["--recipe", "cnn-gan-modern"]).flat())
    assert (a.arch, a.loss, a.spectral_norm, a.ema, a.diffaugment, a.acgan, a.gp_weight) == \
        ("ie534", "hinge", "on", 0.999, "color,translation,cutout", "on", 0.0)
    for name, recipe in RECIPES.items():  # the lessons' recipes leave every tool off
        if name != "cnn-gan-modern":
            assert not {"ema", "diffaugment", "spectral_norm"} & set(recipe.defaults), name
