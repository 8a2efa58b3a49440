import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import DIGITS_JITTER, last_line, pdf_text, run_cli
from PIL import Image

import train_baseline
import visualize
from utils.checkpoints import load_model
from utils.data import load_dataset, make_generator
from utils.figures import context
from utils.figures.ascent import max_class, max_features
from utils.figures.attack import budget_curve, linear_path, pgd
from utils.figures.attribution import attributions, gradcam_layer, spatial_layers
from utils.figures.context import pick_test_batch
from utils.figures.lucid import FourierImage, colour_matrix, diversity, robust
from utils.figures.perturbation import LEVEL, perturb


@pytest.fixture(scope="module")
def trained(digits_baseline):
    model, _ = load_model(digits_baseline[0], "discriminator", "train_baseline.py")
    model.requires_grad_(False)
    x, y = pick_test_batch(load_dataset("digits", ""), 100, seed=0)
    return model, x, y


def test_perturbation_moves_toward_the_alternative_label(trained):
    model, x, y = trained
    _, same, f0 = perturb(model, x, y, gain=0)
    assert torch.equal(same, x) and f0["acc_after"] == f0["acc_before"]  # gain 0: no change
    grad, altered, f = perturb(model, x, y, gain=16)
    assert altered.min() >= -1 and altered.max() <= 1
    assert (altered - x).abs().max() <= 16 * LEVEL + 1e-6  # at most gain levels per pixel
    assert f["p_alt_after"] > 2 * f["p_alt_before"]  # label+1 became more likely
    assert f["acc_after"] < f["acc_before"] - 5 and f["acc_before"] > 85
    assert f["alt_after"] > f["alt_before"]


@pytest.mark.slow
def test_class_maximisation_raises_each_own_logit(trained):
    model, x, _ = trained
    images, start, end, pred = max_class(model, x.mean(0, keepdim=True), 10)  # 200 steps
    assert images.shape == (10, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert (end - start > 1.5).all() and (end - start).mean() > 4, (start, end)
    assert (pred == torch.arange(10)).float().mean() >= 0.8


@pytest.mark.parametrize("layer", range(1, 9))
def test_feature_maximisation_raises_the_chosen_feature(trained, layer):
    model, x, _ = trained
    images, start, end = max_features(model, x.mean(0, keepdim=True), layer, n=6, steps=15)
    assert images.shape == (6, 3, 32, 32)
    assert (end > start).all()


@pytest.mark.slow
def test_regularisers_change_and_smooth_the_images(trained):
    model, x, _ = trained
    mean = x.mean(0, keepdim=True)
    tv = lambda z: (z[..., 1:] - z[..., :-1]).abs().mean()  # noqa: E731  (total variation)
    plain = max_features(model, mean, 8, n=6, steps=30)[0]
    blurred = max_features(model, mean, 8, n=6, steps=30, blur_every=5)[0]
    assert tv(blurred) < 0.97 * tv(plain)
    jit = [max_features(model, mean, 8, n=6, steps=30, jitter=2,
                        generator=torch.Generator().manual_seed(s))[0] for s in (0, 0, 1)]
    assert torch.equal(jit[0], jit[1]) and not torch.equal(jit[0], jit[2])  # seeded shifts
    assert not torch.allclose(jit[0], plain)


def _size(path):
    return Image.open(path).size


@pytest.mark.slow
def test_all_figures_and_the_report(digits_baseline, digits_gan, tmp_path, capsys):
    import metrics

    run, _ = digits_gan
    out = run / "visualization"  # where metrics.py records its figures for the report
    code, stdout, err = run_cli(metrics.main, [str(run), "--metrics", "cfid,cacc",
                                               "--classifier", digits_baseline[0],
                                               "--n_samples", "500"], capsys)
    assert code == 0, err
    quality = json.loads(stdout.splitlines()[-1])
    argv = ["all", "--run_dir", str(run), "--baseline_model", digits_baseline[0],
            "--out_dir", str(out), "--steps", "20", "--layers", "2", "8", "--max_gain", "4"]
    code, stdout, err = run_cli(visualize.main, argv, capsys)
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    cell = 34 * 2  # 32 pixels + 2 of gap, drawn twice as large
    assert _size(out / "real_images.png") == (10 * cell + 4, 10 * cell + 4)  # 10 x 10
    strip = 14  # the class names under the columns
    assert _size(out / "max_class_gan_steps20.png") == (10 * cell + 4, cell + 4 + strip)
    assert _size(out / "max_features_baseline_layer8_steps20.png") == (10 * cell + 4, 2 * cell + 4)
    assert _size(out / "samples_seed0.png") == (10 * cell + 4, 10 * cell + 4 + strip)
    for name in ("gradient_image_baseline", "altered_images_gan", "perturb_gain_baseline",
                 "interpolation_seed0", "max_features_gan_layer2_steps20"):
        assert (out / f"{name}.png").exists(), name
    summary = json.load(open(out / "summary.json"))
    assert summary["samples"]["baseline_agreement"] > 50  # the generator draws its classes
    pdf = (out / "report.pdf").read_bytes()
    pages = result["pages"]
    assert len(re.findall(rb"/Type /Page\b", pdf)) == len(pages) == 11
    assert any("progressed" in p for p in pages) and any("layer 8" in p for p in pages)
    assert "missing" not in err
    # the figures beyond the assignment only with --extras
    assert not [f for f in os.listdir(out) if re.match(r"(attack|transfer|attributions)", f)]
    # every figure it names is embedded: 6 progress grids, 4 perturbation images per model,
    # max-class for both, layers 2 and 8 for both and the 2 sample pictures; the curves of
    # both trainers are drawn as vector graphics (2 pages, no image)
    assert len(re.findall(rb"/Subtype /Image", pdf)) == 6 + 2 * 4 + 2 + 2 * 2 + 2
    assert sum("Training curves" in p for p in pages) == 2
    # and the title page quotes the test accuracies stored in the model files
    text = pdf_text(pdf)
    for path in (digits_baseline[0], run / "discriminator.model"):
        m = load_model(str(path), "discriminator", "")[1]["metrics"]
        assert f"test accuracy {m['test_acc']}% after {m['epochs']} epochs" in text, text[:500]
    # and the sample-quality page quotes metrics.py's figures
    assert f"classifier FID: {quality['cfid']:.4g}" in text and "500 samples against digits" in text


def test_report_names_what_is_missing(digits_gan, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in ("generator.model", "discriminator.model"):
        shutil.copy(digits_gan[0] / f, run / f)
    code, out, err = run_cli(visualize.main, ["report", "--run_dir", str(run)], capsys)
    assert code == 0, err
    assert (run / "visualization" / "report.pdf").exists()
    assert "missing" in err and "visualize.py max-class" in err and "visualize.py samples" in err
    assert "cifar10.model" not in err  # a model the run does not have is left out, not missing


def test_samples_for_chosen_classes(digits_gan, tmp_path, capsys, monkeypatch):
    run, _ = digits_gan
    argv = ["samples", "--run_dir", str(run), "--out_dir", str(tmp_path), "--classes", "3", "7",
            "--n_per_class", "4", "--interp_steps", "6"]
    fed = []  # the one-hot class of every noise vector the generator is given
    real_load = context.load_model

    def spying_load(path, arch, made_by, **identity):
        model, *rest = real_load(path, arch, made_by, **identity)
        if arch == "generator":
            model.register_forward_pre_hook(lambda m, inp: fed.append(inp[0][:, :10].argmax(1)))
        return (model, *rest)

    monkeypatch.setattr(context, "load_model", spying_load)
    assert run_cli(visualize.main, argv, capsys)[0] == 0
    samples, rows = fed
    assert samples.tolist() == [3, 7] * 4  # one column per chosen class, and no other class
    assert rows.tolist() == [3] * 6 + [7] * 6  # one interpolation row per class
    cell = 68
    assert _size(tmp_path / "samples_classes3-7_npc4_seed0.png".replace("npc", "nperclass")) == \
        (2 * cell + 4, 4 * cell + 4 + 14)  # and the class names under the columns
    assert _size(tmp_path / "interpolation_classes3-7_nperclass4_seed0.png") == \
        (6 * cell + 4, 2 * cell + 4)


def test_bad_input(digits_baseline, digits_gan, tmp_path, capsys):
    run, _ = digits_gan

    def fails(argv, *words):
        code, _, err = run_cli(visualize.main, argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        for w in words:
            assert w in err, err

    fails(["max-class", "--run_dir", str(tmp_path)], "cifar10.model", "train_baseline.py")
    fails(["max-class", "--model", "gan", "--gan_model", str(run / "generator.model"),
           "--run_dir", str(run)], "holds a generator")
    fails(["max-features", "--model", "gan", "--layers", "9", "--run_dir", str(run)],
          "--layers 9", "layers 1 to 8")
    fails(["max-features", "--layers", "0", "--run_dir", str(run)], "--layers", ">= 1")
    fails(["samples", "--classes", "zebra", "--run_dir", str(run)], "no class 'zebra'")
    fails(["paint", "--run_dir", str(run)], "invalid choice")
    (tmp_path / "broken.model").write_bytes(b"not a model")
    fails(["perturb", "--baseline_model", str(tmp_path / "broken.model"), "--model", "baseline"],
          "not a readable checkpoint")


# --------------------------------------------- beyond the assignment: lucid, captum, PGD, transfer
# Understanding CNNs beyond the assignment: feature images a person can read (an FFT
# parameterisation in decorrelated colours, transformation robustness, diversity), measured by
# whether they transfer; captum's attributions; PGD and the linear path; all only when asked.

def test_the_fft_parameterisation_round_trips_an_image():
    torch.manual_seed(0)
    colour = colour_matrix((torch.rand(64, 3, 8, 8) * 255).to(torch.uint8))
    image = FourierImage(3, 3, 32, 32, colour)
    x = torch.rand(3, 3, 32, 32) * 1.8 - 0.9
    image.set_image(x)
    assert torch.allclose(image(), x, atol=1e-4)
    image.spectrum.data.normal_()  # and every setting of the parameters is an image in (-1, 1)
    y = image()
    assert y.shape == (3, 3, 32, 32) and y.abs().max() <= 1


def test_the_colour_matrix_decorrelates_the_training_pixels():
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.4, 0.3]])  # correlated RGB
    z = torch.randn(2000, 3, 8, 8, generator=g)
    images = (torch.einsum("ij,njhw->nihw", mix, z) * 40 + 128).clamp(0, 255).to(torch.uint8)
    m = colour_matrix(images)
    x = images.float().div(127.5).sub(1).permute(1, 0, 2, 3).flatten(1)
    white = torch.linalg.inv(m) @ (x - x.mean(1, keepdim=True))
    assert torch.allclose(torch.cov(white), torch.eye(3), atol=0.02)
    assert not torch.allclose(torch.cov(x), torch.diag(torch.cov(x).diagonal()), atol=0.01)


def test_robust_transforms_are_seeded_and_resumable():
    x = torch.rand(4, 3, 32, 32)
    at = lambda step: robust(x, make_generator("cpu", 0, "lucid", step))  # noqa: E731
    first, second = at(5), at(6)
    assert torch.equal(first, at(5))  # step 5's draw, whatever came before: a resume repeats it
    assert not torch.equal(first, second) and first.shape == x.shape


def test_diversity_is_lowest_for_different_images():
    a = torch.rand(1, 4, 6, 6)
    same = diversity(torch.cat([a, a]), 2)
    apart = diversity(torch.cat([a, torch.rand(1, 4, 6, 6) ** 3]), 2)
    assert same == pytest.approx(1.0, abs=1e-5) and apart < same


@pytest.fixture(scope="module")
def second_classifier(tmp_path_factory):
    """A digits classifier trained like conftest's, with another seed: a judge of transfer."""
    out = tmp_path_factory.mktemp("seed1")
    train_baseline.main(["--dataset", "digits", "--width", "16", "--batch_size", "64", "--lr",
                         "2e-3", "--epochs", "8", "--seed", "1", "--out_dir", str(out),
                         "--log_every", "1000", *DIGITS_JITTER])
    return str(out / "cifar10.model")


@pytest.mark.slow
def test_lucids_images_transfer_and_the_assignments_do_not(digits_baseline, digits_gan,
                                                           second_classifier, tmp_path, capsys):
    """Max-class images that show their class are given it by other networks too. Measured on
    the digits: the assignment's ascent 10-40% (it exploits one network's quirks), lucid's
    (fft, robust) 70-100%; at least 30 points apart asserted."""
    run = tmp_path / "run"
    shutil.copytree(digits_gan[0], run)
    shutil.copy(digits_baseline[0], run / "cifar10.model")
    code, out, err = run_cli(visualize.main, ["transfer", "--run_dir", str(run), "--judges",
                                              second_classifier, "--steps", "100"], capsys)
    assert code == 0, err
    rates = json.loads(out.splitlines()[-1])["transfer"]
    for name, methods in rates.items():
        plain, fft = (np.mean(list(methods[m].values())) for m in ("pixel", "fft"))
        assert fft >= plain + 30, (name, methods)
    assert Image.open(run / "visualization" / "transfer_gan.png").size[1] == 2 * 68 + 4 + 14


def test_captums_attributions_have_the_inputs_shape_and_ig_is_complete(digits_baseline):
    model, _ = load_model(digits_baseline[0], "discriminator", "")
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    target = torch.tensor([0, 3, 5, 9])
    assert spatial_layers(model, x) == list(range(1, model.depth + 1))  # all convolutions
    saliency, ig, cam, error = attributions(model, x, target, ig_steps=128, ig_batch=64,
                                            layer=model.depth)
    assert saliency.shape == cam.shape == (4, 1, 32, 32) and ig.shape == x.shape
    with torch.no_grad():
        change = (model(x)[1] - model(torch.zeros_like(x))[1]).gather(1, target[:, None])[:, 0]
    # completeness: the attributions sum to the logit's change from the grey baseline
    # (a 128-step Riemann sum: measured error at most 1.1% over seeds 0-4)
    assert torch.allclose(ig.flatten(1).sum(1), change, atol=0.03 * change.abs().max().item())
    assert error.abs().max() < 0.03 * change.abs().max()


@pytest.mark.slow
def test_pgd_changes_nothing_at_budget_0_and_hurts_more_as_the_budget_grows(digits_baseline):
    from utils.data import load_dataset
    from utils.figures.context import pick_test_batch

    model, _ = load_model(digits_baseline[0], "discriminator", "")
    model.requires_grad_(False)
    x, y = pick_test_batch(load_dataset("digits", None), 100, 0)
    assert torch.equal(pgd(model, x, y, 0.0), x)
    adv = pgd(model, x, y, 4 * LEVEL, steps=10)
    assert (adv - x).abs().max() <= 4 * LEVEL + 1e-6 and adv.min() >= -1 and adv.max() <= 1
    curve = budget_curve(model, x, y, 16, steps=5)
    assert curve[0] > 90 and curve[-1] < curve[0] - 40, curve
    drops = np.diff(curve)
    assert drops.mean() < 0 and (drops <= 2).all(), curve  # down on average, never up much
    t, logits = linear_path(model, x[:1], y[:1])
    assert logits.shape == (41, 10) and t[0] == -10 and t[-1] == 10


def test_gradcam_looks_at_the_last_map_and_refuses_a_vector_layer():
    from types import SimpleNamespace

    from models import discriminator
    from utils.errors import UserError

    torch.manual_seed(0)
    model = discriminator("infogan", 8, 10, 1, 28).eval()  # conv, conv, then fully connected
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    maps = spatial_layers(model, x)
    assert maps and maps[-1] < model.depth
    saliency, ig, cam, _ = attributions(model, x, torch.tensor([1, 2, 3]), ig_steps=8,
                                        layer=maps[-1])
    assert cam.shape == saliency.shape == (3, 1, 28, 28) and ig.shape == x.shape
    ctx = lambda layer: SimpleNamespace(  # noqa: E731
        options=SimpleNamespace(gradcam_layer=layer), model=lambda name: (model, {}),
        batch=lambda: (x, None))
    assert gradcam_layer(ctx(None), "baseline") == maps[-1]  # the default: the last map
    with pytest.raises(UserError, match=f"layer {model.depth} gives a vector, not a map"):
        gradcam_layer(ctx(model.depth), "baseline")


def test_judges_are_checked_before_any_figure(digits_baseline, tmp_path, capsys):
    from models import discriminator
    from utils.checkpoints import save_model

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(digits_baseline[0], run / "cifar10.model")
    classes = [str(i) for i in range(10)]
    no_head, other_shape = tmp_path / "no_head.model", tmp_path / "mnist.model"
    encoder = tmp_path / "simclr.model"
    save_model(no_head, discriminator("ie534", 8, 0, 3, 32), {})
    save_model(encoder, discriminator("ie534", 8, 0, 3, 32), {}, made_by="train_simclr.py")
    save_model(other_shape, discriminator("ie534", 8, 10, 1, 28), {}, classes=classes)
    for judge, words in ((no_head, "trained with --acgan off"),
                         (encoder, "a SimCLR encoder from train_simclr.py"),
                         (other_shape, "reads 1-channel 28x28"),
                         (tmp_path / "missing.model", "not found")):
        code, _, err = run_cli(visualize.main, ["transfer", "--run_dir", str(run), "--judges",
                                                str(judge), "--steps", "2"], capsys)
        assert code == 2 and words in err and "Traceback" not in err, err
        assert not (run / "visualization").exists()  # refused before anything was made


@pytest.mark.slow
def test_the_new_figures_appear_when_asked(digits_baseline, digits_gan, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(digits_gan[0], run)
    shutil.copy(digits_baseline[0], run / "cifar10.model")
    fast = ["--steps", "5", "--layers", "8", "--n_features", "4", "--max_gain", "2",
            "--max_budget", "4", "--attack_steps", "2", "--ig_steps", "8"]
    vis = run / "visualization"  # (without --extras: test_all_figures_and_the_report)
    assert run_cli(visualize.main, ["all", "--extras", "--run_dir", str(run), *fast],
                   capsys)[0] == 0
    assert {"attack.png", "transfer_gan.png", "attributions_baseline.png"} <= set(os.listdir(vis))
    text = pdf_text((vis / "report.pdf").read_bytes())
    assert "Beyond the assignment: what the generator changed in its discriminator" in text
    assert "under PGD" in text and "judged their class by" in text
    code, _, err = run_cli(visualize.main, ["max-class", "--run_dir", str(run), "--copies", "3"],
                           capsys)
    assert code == 2 and "--param fft" in err


# -------------------------------------------------------------- refused before anything is written

@pytest.mark.slow
def test_a_model_shown_other_data_is_refused_before_anything_is_written(digits_baseline, folder,
                                                                        tmp_path, capsys):
    out = tmp_path / "vis"
    code, _, err = run_cli(visualize.main, ["perturb", "--model", "baseline", "--baseline_model",
                                            digits_baseline[0], "--dataset", "folder",
                                            "--data_dir", folder, "--cache_dir",
                                            str(tmp_path / "cache"), "--out_dir", str(out)],
                           capsys)
    assert "names the classes" in last_line(code, err)
    assert not os.path.exists(out) or not [f for f in os.listdir(out) if f.endswith(".png")]
