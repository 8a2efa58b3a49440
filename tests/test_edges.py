"""Numbers and environments that would reach torch unchecked, and messages that would name the
wrong cause: each one line and a non-zero exit before any work (nothing written)."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli

import metrics
import train_baseline
import train_gan
import visualize
from models import discriminator
from utils.checkpoints import save_model

TINY = ["--dataset", "digits", "--width", "4", "--epochs", "1", "--amp", "off"]


def one_line(code, err):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    return err


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**70)])
def test_a_seed_outside_every_generators_range(seed, tmp_path, capsys):
    for main, argv in ((train_baseline.main, TINY + ["--out_dir", str(tmp_path)]),
                       (visualize.main, ["perturb", "--run_dir", str(tmp_path)]),
                       (metrics.main, [str(tmp_path)])):
        err = one_line(*run_cli(main, argv + ["--seed", seed], capsys)[::2])
        assert "--seed" in err and "2**63 - 1" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--out_dir", "--data_dir", "--cache_dir", "--stop_file"])
def test_an_empty_path_is_refused(flag, tmp_path, capsys):
    for argv in (TINY + [flag, ""], TINY + [f"{flag}="]):
        err = one_line(*run_cli(train_gan.main, argv, capsys)[::2])
        assert flag in err and "empty" in err
    err = one_line(*run_cli(visualize.main, ["all", "--run_dir", ""], capsys)[::2])
    assert "--run_dir" in err


@pytest.mark.parametrize("script,argv", [
    (train_gan, ["--batch_size", "1", "--subset", "8"]),  # the generator's BatchNorm
    (train_baseline, ["--arch", "udacity-mlp", "--batch_norm", "on", "--batch_size", "1",
                      "--subset", "8"]),
])
def test_a_batch_of_one_through_batchnorm(script, argv, tmp_path, capsys):
    err = one_line(*run_cli(script.main, TINY + argv + ["--out_dir", str(tmp_path / "r")],
                            capsys)[::2])
    assert "BatchNorm" in err and "--batch_size" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_batch_of_one_without_batchnorm_trains(tmp_path, capsys):
    code, _, err = run_cli(train_baseline.main, TINY + ["--batch_size", "1", "--subset", "4",
                                                        "--out_dir", str(tmp_path)], capsys)
    assert code == 0, err  # ie534's LayerNorm normalises each image alone


def folder_of_pngs(folder, n, channels=3, size=32):
    from PIL import Image

    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        a = torch.randint(0, 256, (size, size, channels), generator=g, dtype=torch.uint8)
        Image.fromarray(a.numpy()[..., 0] if channels == 1 else a.numpy()).save(
            folder / f"{i:05d}.png")
    return str(folder)


def classifier(path, channels, size):
    save_model(str(path), discriminator("mlp", 4, 10, channels, size), {"dataset": "x"}, {},
               [str(i) for i in range(10)], "train_baseline.py")
    return str(path)


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


def test_the_gan_checks_its_evaluations_sample_count_at_the_start(tmp_path, capsys):
    judge = classifier(tmp_path / "c.model", 3, 32)
    out = tmp_path / "run"
    err = one_line(*run_cli(train_gan.main, TINY + [
        "--eval_every", "1", "--eval_metrics", "cfid", "--eval_classifier", judge,
        "--eval_samples", "3", "--out_dir", str(out)], capsys)[::2])
    assert "--eval_samples" in err and not out.exists()


def test_a_classifier_of_another_shape_is_refused(tmp_path, capsys):
    fakes = folder_of_pngs(tmp_path / "fakes", 12)
    grey = classifier(tmp_path / "grey.model", 1, 28)
    err = one_line(*run_cli(metrics.main, [fakes, "--real", fakes, "--metrics", "cconf",
                                           "--classifier", grey], capsys)[::2])
    assert "1-channel 28x28" in err and "3-channel 32x32" in err
    err = one_line(*run_cli(train_gan.main, TINY + [
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


def test_a_dead_torchrun_peer_is_one_line(monkeypatch, capsys):
    """What gloo raises in the survivors when a peer of the job dies."""
    from flags import run_main
    from utils.errors import EXIT_PEER_LOST

    def main(argv):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
                           "closed by peer [127.0.0.1]:29500\nmore lines of the traceback")

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    err = capsys.readouterr().err
    assert e.value.code == EXIT_PEER_LOST and err.count("\n") == 1
    assert "another process of this torchrun job stopped" in err and "--resume" in err
    monkeypatch.setenv("WORLD_SIZE", "1")  # alone, the same error is no peer's: raised
    with pytest.raises(RuntimeError):
        run_main(main, [])


def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path):
    """ulimit -f set low: the checkpoint's write fails without an errno (torch's zip writer),
    and a plain file's with EFBIG; both are said as the limit they are."""
    script = (
        "import resource, sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "import torch\n"
        "from flags import run_main\n"
        "from utils.checkpoints import atomic_save\n"
        "from utils.files import atomic_write_text\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100000, resource.RLIM_INFINITY))\n"
        "def main(argv):\n"
        "    if argv[0] == 'ckpt':\n"
        "        atomic_save({'kind': 'x', 'w': torch.zeros(100000)}, argv[1])\n"
        "    else:\n"
        "        atomic_write_text(argv[1], 'x' * 200000)\n"
        "run_main(main, sys.argv[1:])\n")
    for kind in ("ckpt", "text"):
        target = tmp_path / f"out.{kind}"
        r = subprocess.run([sys.executable, "-c", script, kind, str(target)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "file-size limit" in r.stderr and "ulimit -f" in r.stderr
        assert "space" not in r.stderr
        assert os.listdir(tmp_path) == [] or not any(p.startswith(".") for p in
                                                     os.listdir(tmp_path))


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


@pytest.mark.parametrize("module,main,argv,what", [
    ("torch_fidelity", "metrics", ["--metrics", "cfid"], "torch-fidelity"),
    ("sklearn", "train_baseline", ["--dataset", "digits"], "scikit-learn"),
    ("tensorboard", "train_gan", ["--dataset", "digits", "--tensorboard"], "tensorboard"),
])
def test_a_missing_extra_is_one_line_naming_the_file_to_install(module, main, argv, what,
                                                                  tmp_path, monkeypatch,
                                                                  capsys):
    import importlib

    for name in list(sys.modules):  # as if the package were not installed
        if name == module or name.startswith(module + ".") or (
                module == "tensorboard" and name.startswith("torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    if main == "metrics":
        argv = [folder_of_pngs(tmp_path / "fakes", 12), "--real", str(tmp_path / "fakes"),
                "--classifier", classifier(tmp_path / "c.model", 3, 32)] + argv
    else:
        argv = argv + ["--out_dir", str(tmp_path / "run"), "--epochs", "1"]
    err = one_line(*run_cli(importlib.import_module(main).main, argv, capsys)[::2])
    assert what in err and "pip install -r requirements-extras.txt" in err
