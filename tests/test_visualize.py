import json
import shutil
import re

import pytest
import torch
from conftest import run_cli
from PIL import Image

import visualize
from utils.checkpoints import load_model
from utils.data import load_dataset
from utils.figures import context
from utils.figures.ascent import max_class, max_features
from utils.figures.context import pick_test_batch
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


def pdf_text(pdf):
    """The text matplotlib wrote into a PDF (its content streams, one string per TJ array)."""
    import zlib

    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            continue  # images and fonts
        for array in re.findall(rb"\[(.*?)\]\s*TJ", content, re.S):
            parts = re.findall(rb"\(((?:\\.|[^\\)])*)\)", array, re.S)  # (...), \) inside
            out.append(re.sub(rb"\\(.)", rb"\1", b"".join(parts)).decode("latin-1"))
    return "\n".join(out)


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
