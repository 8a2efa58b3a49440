"""Sample-quality metrics: distances that order what they should, figures recomputed
independently, the Inception path wired through torch-fidelity's own extension point, offline
errors, the cache and the measurements during training, precision and recall, and the inputs
refused in one line (too few images, an unknown extractor, a judge of other classes or another
shape, Inception weights that do not fit) with the judge's own strength shown."""
import json
import os
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import (TINY_DIGITS, bind_read_only, classifier, folder_of_pngs, last_line,
                      one_line, run_cli, train)
from PIL import Image

import metrics
import train_gan
from models import discriminator
from utils import quality
from utils.checkpoints import save_model
from utils.data import Batches, load_dataset
from utils.training import evaluate


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    d = load_dataset("mnist", mnist_dir)
    return d.test_x, d.test_y  # uint8 (10000, 1, 28, 28), labels


def _blur(x):
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :]) / 256  # a 5x5 binomial (Gaussian-like) blur
    y = F.conv2d(x.float(), k[None, None], padding=2)
    return y.round().clamp(0, 255).to(torch.uint8)


@pytest.mark.slow
def test_distances_order_real_blurred_and_noise(mnist_test, mnist_judge):
    """Between the two halves of the test set the classifier FID is far smaller than between
    the test set and a blurred copy, and that again smaller than against noise images."""
    x, y = mnist_test
    a, b = x[:5000], x[5000:]
    noise = torch.randint(0, 256, b.shape, dtype=torch.uint8, generator=torch.Generator())
    _, judge = mnist_judge
    d = {name: quality.evaluate(fake, None, a, None, ["cfid"], classifier=judge)["cfid"]
         for name, fake in (("halves", b), ("blurred", _blur(b)), ("noise", noise))}
    # measured: halves 8.7 (the bias of 5,000 samples in 1,024 features), blurred 52, noise 273
    assert d["halves"] * 4 < d["blurred"] and d["blurred"] * 4 < d["noise"], d


def _features(model, x):
    with torch.no_grad():
        h = quality.classifier_input(x, model)
        for block in model.blocks:
            h = block(h)
        return model.trunk(h).double().numpy()


@pytest.mark.slow
def test_cfid_is_the_frechet_distance_of_the_classifiers_features(mnist_test, mnist_judge):
    """The same distance computed here with numpy and scipy from the same features."""
    x, _ = mnist_test
    model, judge = mnist_judge
    a, b = _blur(x[:3000]), x[3000:6000]
    fa, fb = _features(model, a), _features(model, b)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    cov_a, cov_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    by_hand = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    ours = quality.evaluate(a, None, b, None, ["cfid"], classifier=judge)["cfid"]
    assert ours == pytest.approx(by_hand, rel=1e-3)


@pytest.mark.slow
def test_cacc_of_real_test_images_is_the_classifiers_test_accuracy(mnist_test, mnist_judge):
    x, y = mnist_test
    model, judge = mnist_judge
    acc, _ = evaluate(model, Batches(x, y, 500))
    # the same hits counted twice; the trainer's figure is a float32 ratio (1e-5 off at most)
    assert quality.evaluate(x, y, x, y, ["cacc"], classifier=judge)["cacc"] == \
        pytest.approx(acc, abs=1e-4)


def _write_pngs(folder, images, labels=None):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        name = f"{i:05d}.png" if labels is None else f"{i:05d}_c{int(labels[i])}.png"
        Image.fromarray(img[0].numpy()).save(os.path.join(folder, name))


@pytest.mark.slow
def test_the_inception_path_with_a_stand_in_extractor(mnist_test, mnist_judge, tmp_path,
                                                      capsys):
    """fid, is and kid go through torch-fidelity exactly as with InceptionV3, with a small
    extractor registered through its register_feature_extractor (the MNIST classifier): a
    generator that always draws the same image has a lower Inception Score and a higher FID
    than real images have against real images."""
    x, _ = mnist_test
    _, judge = mnist_judge
    stand_in = quality.classifier_extractor(judge)  # registered with torch-fidelity
    real, same = tmp_path / "real", tmp_path / "same"
    _write_pngs(real, x[:1000])
    _write_pngs(same, x[1000:1001].expand(1000, -1, -1, -1))
    results = {}
    for name, fake in (("real", x[1000:2000]), ("same", None)):
        folder = tmp_path / f"fake_{name}"
        if fake is not None:
            _write_pngs(folder, fake)
        code, out, err = run_cli(metrics.main, [str(folder if fake is not None else same),
                                                "--real", str(real), "--metrics", "fid,is,kid",
                                                "--feature_extractor", stand_in], capsys)
        assert code == 0, err
        results[name] = json.loads(out.splitlines()[-1])
    r, s = results["real"], results["same"]
    assert s["is"] == pytest.approx(1.0, abs=1e-3)  # one image, one class: IS 1
    assert r["is"] > s["is"] + 5, r  # ten classes of digits
    assert s["fid"] > 10 * r["fid"] and s["kid"] > 10 * r["kid"]
    assert r["n_fake"] == r["n_real"] == 1000 and r["extractor"] == stand_in


def test_a_read_only_run_folder_is_refused_before_any_sampling(digits_gan, tmp_path, capsys):
    """metrics.json goes into the run folder: a read-only one is one line before the work,
    which says what the user can do (metrics.py has no folder of its own to write to)."""
    run, _ = digits_gan
    copy = tmp_path / "ro" / "run"
    shutil.copytree(run, copy)
    undo = bind_read_only(str(tmp_path / "ro"))
    try:
        code, _, err = run_cli(metrics.main, [str(copy), "--metrics", "cfid"], capsys)
    finally:
        undo()
    assert "cannot write metrics.json" in one_line(code, err) and "copy the run" in err, err


def test_without_network_or_weights_it_says_what_to_do(digits_gan, tmp_path, capsys,
                                                       monkeypatch):
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    run, _ = digits_gan
    code, _, err = run_cli(metrics.main, [str(run), "--metrics", "fid"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--inception_weights" in err, err
    assert "--metrics cfid,cacc" in err
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a weights file")
    code, _, err = run_cli(metrics.main, [str(run), "--inception_weights", str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(bad) in err, err
    code, _, err = run_cli(train_gan.main, ["--dataset", "digits", "--eval_every", "1",
                                            "--out_dir", str(tmp_path / "t")], capsys)
    assert code == 2 and "--inception_weights" in err  # before any training
    assert "--eval_metrics cfid,cacc" in err  # the flag of the command that was run
    assert not (tmp_path / "t").exists()

    def downloads(*a, **k):  # torch.hub announces a download on stdout
        print("Downloading: inception")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", downloads)
    quality.check_inception(None)
    out, err = capsys.readouterr()
    assert "Downloading" in err and "Downloading" not in out  # stdout ends in the JSON alone


def test_intra_needs_of_each_class_what_the_whole_distance_needs():
    five, ten = torch.arange(50) % 10, torch.arange(100) % 10  # 5 and 10 of each class
    with pytest.raises(quality.UserError, match="at least 10 fake and 10 real images of each"):
        quality.check_counts(["cfid"], five, ten, 50, 100, intra=True)
    with pytest.raises(quality.UserError, match="at least 4 fake and 4 real images of each"):
        quality.check_counts(["cprc"], torch.arange(30) % 10, ten, 30, 100, intra=True)
    quality.check_counts(["cfid"], ten, ten, 100, 100, intra=True)  # enough: no error
    quality.check_counts(["cfid"], five, ten, 50, 100)  # without --intra, 50 are enough


@pytest.mark.slow
def test_intra_fid_gives_one_figure_per_class_and_the_cache_is_read(digits_gan,
                                                                    digits_baseline, tmp_path,
                                                                    capsys, monkeypatch):
    run, _ = digits_gan
    argv = [str(run), "--metrics", "cfid,cacc", "--intra", "--classifier", digits_baseline[0],
            "--n_samples", "300", "--cache_dir", str(tmp_path / "cache")]
    code, out, err = run_cli(metrics.main, argv, capsys)
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    per_class = result["intra_cfid"]
    assert sorted(per_class, key=int) == [str(c) for c in range(10)]
    # each figure is rounded to 6 significant digits (tidy): the mean of the rounded figures
    # is within 1e-5 of the rounded mean, relatively
    assert result["intra_cfid_mean"] == pytest.approx(sum(per_class.values()) / 10, rel=1.01e-5)
    assert result["cacc"] > 50 and result["n_fake"] == 300 and result["n_real"] == 1500
    assert json.load(open(run / "metrics.json"))["cfid"] == result["cfid"]
    assert json.load(open(run / "visualization" / "summary.json"))["metrics"] == result
    cached = os.listdir(tmp_path / "cache" / "fidelity")
    assert any(f.startswith("cnn-gan-digits-") and "-train-1500-" in f for f in cached)
    # a second evaluation reads the real features from the cache: only the fakes (and the
    # classes' fakes for intra-FID, and cacc's) go through the classifier
    seen = []
    real_input = quality.classifier_input
    monkeypatch.setattr(quality, "classifier_input", lambda x, m: seen.append(len(x)) or
                        real_input(x, m))
    code, out2, err = run_cli(metrics.main, argv, capsys)
    assert code == 0, err
    assert sum(seen) == 300 + 300 + 300  # cfid's fakes, intra-FID's fakes, cacc's fakes
    assert json.loads(out2.splitlines()[-1])["cfid"] == pytest.approx(result["cfid"])


@pytest.mark.slow
def test_sample_quality_during_training(digits_baseline, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--dataset", "digits", "--width", "8", "--batch_size", "32", "--subset", "256",
            "--epochs", "3", "--lr", "2e-3", "--log_every", "1000",
            "--eval_classifier", digits_baseline[0]]
    argv = base + ["--out_dir", str(out), "--eval_every", "2", "--eval_metrics", "cfid,cacc",
                   "--eval_samples", "200"]
    code, _, err = run_cli(train_gan.main, argv, capsys)
    assert code == 0, err
    epochs = [json.loads(line) for line in open(out / "gan_log.jsonl")]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    evaluated = [r["epoch"] for r in epochs if "cfid" in r]
    assert evaluated == [2, 3]  # every 2 epochs, and after the last
    assert all(r["eval_samples"] == 200 and 0 <= r["cacc"] <= 100 and r["cfid"] > 0
               for r in epochs if "cfid" in r)
    code, _, err = run_cli(train_gan.main, base + ["--acgan", "off", "--eval_every", "1",
                                                   "--eval_metrics", "cacc", "--out_dir",
                                                   str(tmp_path / "u")], capsys)
    assert code == 2 and err.count("\n") == 1 and "class-conditional" in err, err


def test_a_datasets_images_are_a_seeded_draw_not_its_first_ones(digits_baseline, tmp_path, capsys,
                                                                 monkeypatch):
    """A split stored class by class (CIFAR-10's PNG folders) gave the floor its first two
    classes only (cfid 70.9 against the ACGAN's 46.6). Both the dataset standing in for the
    fakes and --n_real's real images are drawn with --seed, from every class."""
    import dataclasses

    def by_class(*args, **kwargs):  # the digits, stored class by class
        d = load_dataset(*args, **kwargs)
        tr, te = d.train_y.argsort(stable=True), d.test_y.argsort(stable=True)
        return dataclasses.replace(d, train_x=d.train_x[tr], train_y=d.train_y[tr],
                                   test_x=d.test_x[te], test_y=d.test_y[te])

    seen = {}

    def spy(fake, fake_labels, real, real_labels, metrics_, **kwargs):
        seen.update(fake=fake_labels, real=real_labels, name=kwargs["real_name"])
        return {}

    monkeypatch.setattr(metrics, "load_dataset", by_class)
    monkeypatch.setattr(metrics, "evaluate", spy)
    argv = ["digits", "--real", "digits", "--split", "test", "--metrics", "cconf",
            "--classifier", digits_baseline[0], "--n_samples", "200", "--n_real", "150"]
    code, out, err = run_cli(metrics.main, argv, capsys)
    assert code == 0, err
    first = dict(seen)
    assert len(first["fake"]) == 200 and len(first["real"]) == 150
    assert torch.bincount(first["fake"], minlength=10).min() >= 8  # about 20 of every class
    assert torch.bincount(first["real"], minlength=10).min() >= 5
    assert first["name"].endswith("-test-150-seed0")  # cached apart from other draws
    assert run_cli(metrics.main, argv, capsys)[0] == 0
    assert torch.equal(seen["fake"], first["fake"]) and torch.equal(seen["real"], first["real"])
    assert run_cli(metrics.main, argv + ["--seed", "1"], capsys)[0] == 0
    assert not torch.equal(seen["fake"], first["fake"]) and seen["name"].endswith("-seed1")
    assert run_cli(metrics.main, argv[:-2], capsys)[0] == 0  # every real image: no seed in
    assert len(seen["real"]) == 297 and seen["name"].endswith("-test-297")  # the name
    code, _, err = run_cli(metrics.main, argv[:-1] + ["100000"], capsys)  # more than there are
    assert code == 0 and "--n_real 100000: digits has 297 images here; all are used" in err, err
    assert len(seen["real"]) == 297
    folder = tmp_path / "by_class"  # a folder of PNG files stored class by class
    folder.mkdir()
    for i in range(100):
        Image.new("L", (8, 8), i).save(folder / f"{i:05d}_c{i // 10}.png")
    x, labels = quality.read_folder(str(folder), 30, seed=0)
    assert len(x) == 30 and len(set(labels.tolist())) >= 8
    assert torch.equal(quality.read_folder(str(folder), 30, seed=0)[1], labels)
    assert torch.equal(quality.read_folder(str(folder))[1], torch.arange(100) // 10)


# ---------------------------------------------------------------------------- precision and recall

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


# ----------------------------------------------------------------------------- refused in one line

def test_metrics_refuse_an_unknown_extractor_and_too_few_images(tmp_path, capsys):
    fakes = folder_of_pngs(tmp_path / "fakes", 12)
    err = one_line(*run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "kid",
                                           "--feature_extractor", "nope"], capsys)[::2])
    assert "--feature_extractor nope" in err and "inception-v3-compat" in err
    judge = classifier(tmp_path / "c.model", 3, 32)
    err = one_line(*run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "cfid",
                                           "--classifier", judge, "--n_samples", "5"],
                            capsys)[::2])
    assert "at least 10" in err and "--n_samples" in err


def test_metrics_with_too_few_images_says_so(digits_baseline, tmp_path, capsys):
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(fakes / "00000.png")
    code, _, err = run_cli(metrics.main, [str(fakes), "--real", "digits", "--metrics", "cfid",
                                          "--classifier", digits_baseline[0]], capsys)
    assert "at least 10" in last_line(code, err)


@pytest.mark.slow
def test_cacc_with_a_classifier_of_other_classes_is_refused(digits_gan, folder, tmp_path, capsys):
    clf = tmp_path / "clf"
    assert train(folder, clf, capsys, "--epochs", "1")[0] == 0  # classes a, b
    run, _ = digits_gan
    code, _, err = run_cli(metrics.main, [str(run), "--metrics", "cacc", "--classifier",
                                          str(clf / "cifar10.model"), "--n_samples", "20"],
                           capsys)
    assert "names the classes" in last_line(code, err)


def test_a_classifier_of_another_shape_is_refused(tmp_path, capsys):
    fakes = folder_of_pngs(tmp_path / "fakes", 12)
    grey = classifier(tmp_path / "grey.model", 1, 28)
    err = one_line(*run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "cconf",
                                           "--classifier", grey], capsys)[::2])
    assert "1-channel 28x28" in err and "3-channel 32x32" in err
    err = one_line(*run_cli(train_gan.main, TINY_DIGITS + [
        "--eval_every", "1", "--eval_metrics", "cconf", "--eval_classifier", grey,
        "--acgan", "off", "--subset", "64", "--batch_size", "32", "--out_dir",
        str(tmp_path / "run")], capsys)[::2])
    assert "1-channel 28x28" in err


def test_inception_weights_of_other_shapes_are_refused(tmp_path, capsys):
    bad = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    fakes = folder_of_pngs(tmp_path / "fakes", 12)
    err = one_line(*run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "fid",
                                           "--inception_weights", str(bad)], capsys)[::2])
    assert str(bad) in err and "does not fit" in err


def test_the_judges_strength_is_shown_and_a_weak_judge_is_warned_of(tmp_path, capsys):
    """cfid, cacc and cconf are only as good as their classifier: its own test accuracy goes
    with them, and one too weak to rank anything is said to be."""
    import json

    fakes = folder_of_pngs(tmp_path / "fakes", 12)
    weak = tmp_path / "weak.model"
    save_model(str(weak), discriminator("mlp", 4, 10, 3, 32), {"dataset": "x"},
               {"test_acc": 15.0}, [str(i) for i in range(10)], "train_baseline.py")
    code, out, err = run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "cconf",
                                            "--classifier", str(weak)], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["judge_test_acc"] == 15.0
    assert "warning: the judge" in err and "15.0% test accuracy: too weak to rank" in err
    from utils.figures.report import quality_notes

    notes = quality_notes(dict(n_fake=12, real="x", split="train", n_real=12, cconf=50.0,
                               judge_test_acc=15.0), str(tmp_path / "no_log.jsonl"))
    assert any("too weak to rank" in n for n in notes) and any("15" in n for n in notes)
