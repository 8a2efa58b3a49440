"""The shared command line: flags, one-line errors (a seed out of range, an empty path)."""
import pytest
from conftest import TINY_DIGITS, one_line, run_cli

import flags as cli
import metrics
import train_baseline
import train_gan
import visualize
from flags import ArgumentParser



def test_parser_accepts_dashes_and_errors_in_one_line(capsys):
    p = ArgumentParser(prog="x")
    cli.add_shared_flags(p, epochs=3, lr=0.1, batch_size=4)
    a = p.parse_args(["--data-dir", "d", "--batch_size=7", "--out-dir=o"])
    assert (a.data_dir, a.batch_size, a.out_dir) == ("d", 7, "o")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--epochs", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err
    assert "--data-dir" not in p.format_help()  # help lists the snake_case spelling only


# (script, flags, words the one line must hold): nonsense numbers of every script
NONSENSE = [
    ("train_baseline", ["--lr", "nan"], ["--lr", "'nan'"]),
    ("train_baseline", ["--lr", "inf"], ["--lr", "'inf'"]),
    ("train_baseline", ["--lr", "0"], ["--lr", "> 0"]),
    ("train_baseline", ["--lr=-1e-4"], ["--lr", "> 0"]),
    ("train_baseline", ["--log_every", "0"], ["--log_every", ">= 1"]),
    ("train_baseline", ["--subset", "0"], ["--subset", ">= 1"]),
    ("train_baseline", ["--epochs", "2.5"], ["--epochs", "whole number"]),
    ("train_baseline", ["--time_limit", "nan"], ["--time_limit"]),
    ("train_baseline", ["--adam_step_cap", "-1"], ["--adam_step_cap", ">= 0"]),
    ("train_baseline", ["--subset", "1501"], ["--subset 1501", "1500 training images"]),
    ("train_baseline", ["--batch_size", "1501"], ["--batch_size 1501", "1500 training images"]),
    ("train_baseline", ["--subset", "20", "--batch_size", "32"],
     ["--batch_size 32", "20 training images"]),
    ("train_gan", ["--gp_weight", "nan"], ["--gp_weight"]),
    ("train_gan", ["--gp_weight", "-1"], ["--gp_weight", ">= 0"]),
    ("train_gan", ["--beta1", "1"], ["--beta1", "[0, 1)"]),
    ("train_gan", ["--beta2", "-0.1"], ["--beta2", "[0, 1)"]),
    ("train_gan", ["--gen_train", "0"], ["--gen_train"]),
    ("train_gan", ["--optimizer", "rmsprop", "--beta1", "0.5"], ["--beta1", "rmsprop"]),
    ("train_gan", ["--recipe", "wgan-clip", "--beta2", "0.99"], ["--beta2", "rmsprop"]),
    ("train_baseline", ["--optimizer", "sgd", "--adam_step_cap", "5"],
     ["--adam_step_cap", "sgd"]),
    ("train_gan", ["--latent_dim", "5"], ["--latent_dim 5", "one-hot"]),
    ("visualize", ["--steps", "0"], ["--steps", ">= 1"]),
    ("visualize", ["--gain", "-1"], ["--gain", "[0, 255]"]),
    ("visualize", ["--gain", "nan"], ["--gain"]),
    ("visualize", ["--lr", "inf"], ["--lr"]),
    ("visualize", ["--weight_decay", "-0.1"], ["--weight_decay"]),
    ("visualize", ["--layers", "0"], ["--layers", ">= 1"]),
    ("visualize", ["--blur_sigma", "0"], ["--blur_sigma"]),
    ("visualize", ["--gain", "256"], ["--gain", "[0, 255]"]),
    ("visualize", ["--jitter", "17"], ["--jitter", "[0, 16]"]),
    ("visualize", ["--interp_steps", "101"], ["--interp_steps", "[1, 100]"]),
    ("visualize", ["--k", "101"], ["--k", "[1, 100]"]),
    ("visualize", ["--max_budget", "256"], ["--max_budget", "[0, 255]"]),
    ("bench", ["--steps", "0"], ["--steps"]),
    ("bench", ["--warmup", "-1"], ["--warmup"]),
]


@pytest.mark.parametrize("script,flags,words", NONSENSE,
                         ids=[f"{s}{'_'.join(f)}" for s, f, _ in NONSENSE])
def test_nonsense_numbers_get_one_line_and_exit_2(script, flags, words, tmp_path, capsys):
    import importlib

    from conftest import run_cli

    module = importlib.import_module(script)
    if script == "visualize":  # each figure has its own flags
        figure = {"--gain": "perturb", "--layers": "max-features", "--interp_steps": "samples",
                  "--k": "neighbours", "--max_budget": "attack"}.get(flags[0], "max-class")
        argv = [figure, "--run_dir", str(tmp_path)] + flags
    elif script == "bench":
        argv = ["--device", "cpu"] + flags
    else:
        argv = ["--dataset", "digits", "--width", "8", "--epochs", "1",
                "--out_dir", str(tmp_path)] + flags
    code, out, err = run_cli(module.main, argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_color_jitter_flag(capsys):
    from train_baseline import build_parser
    from utils.augment import jitter_strengths

    p = build_parser()
    assert p.parse_args([]).color_jitter == "assignment"
    assert jitter_strengths(3, p.parse_args(["--color_jitter", "off"]).color_jitter) == (0,) * 4
    chosen = p.parse_args(["--color_jitter", "0.1,0.2,0,0.05"]).color_jitter
    assert jitter_strengths(3, chosen) == (0.1, 0.2, 0.0, 0.05)
    for bad in ("0.1,0.2", "0.1,0.2,0.3,0.9", "0.1,-0.2,0,0", "a,b,c,d", "nan,0,0,0"):
        with pytest.raises(SystemExit):
            p.parse_args(["--color_jitter", bad])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--color_jitter" in err


# ----------------------------------------------------------------------------- every command

@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**70)])
def test_a_seed_outside_every_generators_range(seed, tmp_path, capsys):
    for main, argv in ((train_baseline.main, TINY_DIGITS + ["--out_dir", str(tmp_path)]),
                       (visualize.main, ["perturb", "--run_dir", str(tmp_path)]),
                       (metrics.main, [str(tmp_path)])):
        err = one_line(*run_cli(main, argv + ["--seed", seed], capsys)[::2])
        assert "--seed" in err and "2**63 - 1" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--out_dir", "--data_dir", "--cache_dir", "--stop_file"])
def test_an_empty_path_is_refused(flag, tmp_path, capsys):
    for argv in (TINY_DIGITS + [flag, ""], TINY_DIGITS + [f"{flag}="]):
        err = one_line(*run_cli(train_gan.main, argv, capsys)[::2])
        assert flag in err and "empty" in err
    err = one_line(*run_cli(visualize.main, ["all", "--run_dir", ""], capsys)[::2])
    assert "--run_dir" in err


def test_a_ctrl_c_outside_a_training_run_says_to_run_again(capsys):
    """run_main's line for an interrupt names no --resume: visualize.py and metrics.py have
    none (a trainer's run says it itself, test_baseline's resume test)."""
    from flags import run_main
    from utils.errors import EXIT_INTERRUPTED

    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_main(interrupted, [])
    err = capsys.readouterr().err
    assert e.value.code == EXIT_INTERRUPTED and err.count("\n") == 1, err
    assert "run the command again" in err and "--resume" not in err
