"""The cluster job scripts: valid bash, only real flags, and the requeue mechanism itself."""
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_cli

import bench
import metrics
import train_baseline
import train_gan
import visualize
from utils.errors import EXIT_STOPPED

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "jobs", "*", "*"))) + [
    os.path.join(ROOT, "jobs", "resumable.sh"), os.path.join(ROOT, "jobs", "cpu_results.sh"),
    os.path.join(ROOT, "jobs", "cpu_ablation.sh")]
PARSERS = {"train_baseline.py": train_baseline.build_parser, "train_gan.py": train_gan.build_parser,
           "visualize.py": visualize.build_parser, "bench.py": bench.build_parser,
           "metrics.py": metrics.build_parser}


def test_there_are_slurm_and_pbs_scripts_for_every_job():
    names = {os.path.relpath(p, os.path.join(ROOT, "jobs")) for p in SCRIPTS}
    for job in ("baseline", "gan", "gan_multi", "visualize"):
        assert f"slurm/{job}.sbatch" in names and f"pbs/{job}.pbs" in names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_job_script_is_valid_bash_and_uses_only_real_flags(path):
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    text = open(path).read().replace("\\\n", " ")  # join continued lines
    if path.endswith((".sbatch", ".pbs")):
        assert "CHANGE_ME" in text.split("set -")[0]  # what a user must edit sits at the top
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(\w+\.py)((?:\s+[^\s;&|]+)*)", line):
            script, rest = m.group(1), m.group(2)
            parser = (visualize.figure_parser(shlex.split(rest)[0]) if script == "visualize.py"
                      else PARSERS[script]())
            known = parser._option_string_actions
            for token in shlex.split(rest):
                if token.startswith("--"):
                    flag = "--" + token.split("=")[0][2:].replace("-", "_")
                    assert flag in known, f"{script} has no flag {token}"



def test_time_limit_stops_with_a_checkpoint(tmp_path, capsys):
    argv = ["--dataset", "digits", "--width", "8", "--batch_size", "16", "--epochs", "50",
            "--lr", "2e-3", "--log_every", "1000", "--time_limit", "0.01",
            "--out_dir", str(tmp_path)]
    code, _, err = run_cli(train_baseline.main, argv, capsys)
    assert code == EXIT_STOPPED and "--time_limit reached" in err
    ckpt = torch.load(tmp_path / "baseline.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["step"] == 1  # honoured after the first step


def _stop_file_run(tmp_path, capsys, subset, extra=()):
    stop = tmp_path / "STOP"
    argv = ["--dataset", "digits", "--width", "8", "--batch_size", "16", "--epochs", "3",
            "--subset", str(subset), "--lr", "2e-3", "--log_every", "1000",
            "--stop_file", str(stop), *extra]
    return stop, argv


def test_stop_file_is_honoured_in_an_epoch_of_few_steps(tmp_path, capsys):
    """4 steps per epoch (fewer than the 10 between looks of old): it stops after step 1."""
    stop, argv = _stop_file_run(tmp_path, capsys, 64)
    stop.touch()
    code, _, err = run_cli(train_baseline.main, argv + ["--out_dir", str(tmp_path / "r")], capsys)
    assert code == EXIT_STOPPED and f"found {stop}" in err, err
    ckpt = torch.load(tmp_path / "r" / "baseline.ckpt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 1)


@pytest.mark.slow
def test_stop_at_an_epochs_end_and_resume_equals_uninterrupted(tmp_path, capsys):
    """One step per epoch: no step to stop after within an epoch, so it stops after the epoch
    with that epoch's checkpoint, and the resumed run ends where an uninterrupted one does."""
    stop, argv = _stop_file_run(tmp_path, capsys, 16)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert run_cli(train_baseline.main, argv + ["--out_dir", a], capsys)[0] == 0
    stop.touch()
    code, _, err = run_cli(train_baseline.main, argv + ["--out_dir", b], capsys)
    assert code == EXIT_STOPPED and "stopped after epoch 1" in err, err
    ckpt = torch.load(os.path.join(b, "baseline.ckpt"), weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0)
    stop.unlink()
    code, _, err = run_cli(train_baseline.main, argv + ["--out_dir", b, "--resume"], capsys)
    assert code == 0, err
    wa = torch.load(os.path.join(a, "cifar10.model"), weights_only=True)["model"]
    wb = torch.load(os.path.join(b, "cifar10.model"), weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_resumable_sh_stops_the_trainer_and_requeues(tmp_path):
    """SIGUSR1 to the job script (SLURM's --signal=B:USR1) -> stop file -> checkpoint, exit 75
    -> the requeue command; the requeued job then finishes the run."""
    run, stop, requeued = tmp_path / "run", tmp_path / "run" / "STOP", tmp_path / "REQUEUED"
    train = [sys.executable, os.path.join(ROOT, "train_baseline.py"), "--dataset", "digits",
             "--width", "8", "--batch_size", "16", "--subset", "480", "--epochs", "8",
             "--lr", "2e-3", "--log_every", "2", "--out_dir", str(run), "--resume", "auto",
             "--stop_file", str(stop)]
    job = [os.path.join(ROOT, "jobs", "resumable.sh"), str(stop), f"touch {requeued}", "--"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(job + train, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = run / "baseline_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (
            log.exists() and '"epoch": 2' in log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert requeued.exists() and not stop.exists()
    ckpt = torch.load(run / "baseline.ckpt", weights_only=True)
    assert 1 <= ckpt["epoch"] < 8, out  # stopped (the file is looked for once a second)
    again = subprocess.run(job + train, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["epochs"] == 8
    history = torch.load(run / "baseline.ckpt", weights_only=True)["history"]
    assert [r["epoch"] for r in history] == list(range(1, 9))


STAND_IN = r"""#!/usr/bin/env bash
# A stand-in for {name}: records its arguments (and, for qsub, the variables named by -v)
# as one JSON line, then does what the real command would need to do here.
python3 - "$0" "$@" <<'PY' >> "$JOB_RECORD"
import json, os, sys
name, args = os.path.basename(sys.argv[1]), sys.argv[2:]
rec = dict(cmd=name, args=args)
if name == "qsub" and "-v" in args:
    names = args[args.index("-v") + 1].split(",")
    rec["env"] = {{n: os.environ.get(n) for n in names}}
print(json.dumps(rec))
PY
case "{name}" in
  srun) while [ "${{1#--}}" != "$1" ]; do shift; done; exec "$@" ;;  # run the wrapped command
  scontrol) [ "$1" = show ] && echo node001; exit 0 ;;
  qsub) exit 0 ;;
  *) exit "$TRAINER_EXIT" ;;  # the trainer (python, torchrun)
esac
"""
JOB_SCRIPTS = ["slurm/baseline.sbatch", "slurm/gan.sbatch", "slurm/gan_multi.sbatch",
               "pbs/baseline.pbs", "pbs/gan.pbs", "pbs/gan_multi.pbs"]


def _run_job(script, tmp_path, env_settings, trainer_exit):
    """Run a job script with stand-ins for the scheduler and the trainer; (exit code, records)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record.jsonl"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python", "torchrun", "srun", "scontrol", "qsub"):
        (bin_dir / name).write_text(STAND_IN.format(name=name))
        (bin_dir / name).chmod(0o755)
    record.write_text("")
    # what a scheduler gives a job: its own variables, and only what was passed to it
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/"),
           "JOB_RECORD": str(record), "TRAINER_EXIT": str(trainer_exit),
           "SLURM_SUBMIT_DIR": ROOT, "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1",
           "SLURM_JOB_NODELIST": "node001", "PBS_O_WORKDIR": ROOT, **env_settings}
    r = subprocess.run(["bash", os.path.join(ROOT, "jobs", script)], env=env,
                       capture_output=True, text=True, timeout=60)
    return r.returncode, [json.loads(line) for line in record.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("trainer_exit", [0, 2, 3, 75])
@pytest.mark.parametrize("script", JOB_SCRIPTS)
def test_requeue_only_on_75_and_with_the_same_settings(script, trainer_exit, tmp_path):
    run_dir = str(tmp_path / "my run")
    settings = {"RUN_DIR": run_dir, "DATA_DIR": str(tmp_path / "data"),
                "EXTRA": "--width 128 --epochs 400"}
    code, records = _run_job(script, tmp_path, settings, trainer_exit)
    trainers = [r for r in records if r["cmd"] in ("python", "torchrun")]
    assert len(trainers) == 1, records
    args = trainers[0]["args"]
    assert args[args.index("--out_dir") + 1] == run_dir
    assert args[args.index("--data_dir") + 1] == settings["DATA_DIR"]
    assert args[-4:] == ["--width", "128", "--epochs", "400"]
    assert "--resume" in args and args[args.index("--resume") + 1] == "auto"
    requeues = [r for r in records if r["cmd"] == "qsub" or r["args"][:1] == ["requeue"]]
    if trainer_exit != 75:
        assert requeues == [] and code == trainer_exit, records
        return
    assert code == 0 and len(requeues) == 1, records
    if script.startswith("slurm"):  # SLURM requeues the job itself, with its environment
        assert requeues[0]["args"] == ["requeue", "4242"]
        return
    qsub = requeues[0]
    assert qsub["args"][-1] == f"jobs/{script}"
    assert {k: qsub["env"][k] for k in settings} == settings
    # the resubmitted job, given only what qsub -v passes, trains with the same settings
    again = _run_job(script, tmp_path, {k: v for k, v in qsub["env"].items() if v is not None},
                     0)[1]
    assert [r["args"] for r in again if r["cmd"] in ("python", "torchrun")] == [args]


def test_a_job_script_run_the_wrong_way_says_so_in_one_line(tmp_path):
    bare = subprocess.run(["bash", os.path.join(ROOT, "jobs", "resumable.sh")],
                          capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: jobs/resumable.sh STOP_FILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for name in ("baseline", "gan", "gan_multi"):  # outside SLURM: no job to requeue
        r = subprocess.run(["bash", os.path.join(ROOT, "jobs", "slurm", f"{name}.sbatch")],
                           capture_output=True, text=True, cwd=tmp_path,
                           env=dict(env, RUN_DIR=str(tmp_path / "run")))
        assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
        assert "submit this script with sbatch" in r.stderr
    assert not os.listdir(tmp_path)


def test_a_failed_requeue_is_not_reported_as_success(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trainer").write_text("#!/bin/sh\nexit 75\n")
    (bin_dir / "trainer").chmod(0o755)
    r = subprocess.run([os.path.join(ROOT, "jobs", "resumable.sh"), str(tmp_path / "STOP"),
                        "false", "--", str(bin_dir / "trainer")], capture_output=True, text=True)
    assert r.returncode == 75 and "requeue command failed" in r.stderr


def test_readme_pictures_are_the_runs_grids_at_one_pixel_per_pixel(digits_gan, tmp_path, capsys):
    import importlib.util

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("readme_pictures",
                                                  os.path.join(ROOT, "jobs", "readme_pictures.py"))
    pictures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pictures)
    results, out = tmp_path / "results", tmp_path / "pictures"
    results.mkdir()
    os.symlink(digits_gan[0], results / "acgan", target_is_directory=True)
    curve = results / "curve.png"
    Image.new("RGB", (30, 20), "red").save(curve)
    code, _, err = run_cli(pictures.main, ["--results", str(results), "--out", str(out),
                                           "--progress", "acgan", "--also", f"{curve}:extra"],
                           capsys)
    assert code == 0, err
    grids = sorted(glob.glob(os.path.join(digits_gan[0], "output", "[0-9]*.png")))
    two_x = np.asarray(Image.open(grids[-1]).convert("RGB"))
    one_x = np.asarray(Image.open(out / "gan_acgan.png"))
    assert np.array_equal(one_x, two_x[::2, ::2])  # each 2x2 block back to its pixel
    strip = Image.open(out / "progress_acgan.png")
    assert strip.width == 4 * one_x.shape[1] + 3 * 8 and strip.height == one_x.shape[0] + 16
    assert np.array_equal(np.asarray(Image.open(out / "extra.png")),
                          np.asarray(Image.open(curve)))  # a figure is copied as it is
    assert "skipped gan_wgan-clip" in err and "MiB in all" in err
    code, _, err = run_cli(pictures.main, ["--results", str(results), "--out", str(out),
                                           "--also", "nocolon.png"], capsys)
    assert code == 2 and "give PNG:NAME" in err and "Traceback" not in err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run_cli(pictures.main, ["--results", str(results), "--out", str(out),
                                           "--also", f"{tmp_path / 'bad.png'}:bad"], capsys)
    assert code == 2 and "bad.png is not a readable PNG" in err and "Traceback" not in err
    code, _, err = run_cli(pictures.main, ["--results", str(results), "--columns", "0"], capsys)
    assert code == 2 and "--columns" in err and "Traceback" not in err
    (tmp_path / "long" / "output").mkdir(parents=True)
    for epoch in (998, 999, 1000, 1001):  # grids of epochs 999 to 1002: in number order
        (tmp_path / "long" / "output" / f"{epoch:03d}.png").touch()
    assert [os.path.basename(f) for f in pictures.epoch_grids(tmp_path / "long")] == \
        ["998.png", "999.png", "1000.png", "1001.png"]
    code, _, err = run_cli(pictures.main, ["--results", str(results), "--out", str(curve)], capsys)
    assert code == 2 and "error: cannot write" in err and "Traceback" not in err


def test_the_makefiles_variables_are_quoted_for_a_folder_with_a_space():
    """make demo DEMO='runs/my demo' passes the folder as one argument to every command."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    r = subprocess.run(["make", "-n", "demo", "DEMO=runs/my demo", "VENV=my venv"], cwd=ROOT,
                       capture_output=True, text=True)
    commands = [shlex.split(line) for line in r.stdout.splitlines() if ".py" in line]
    assert len(commands) == 4, r.stdout + r.stderr
    for argv in commands:
        assert argv[0] == "my venv/bin/python"
        if "metrics.py" in argv:  # the run folder is its first argument
            assert argv[2] == "runs/my demo"
            continue
        flag = "--run_dir" if "visualize.py" in argv else "--out_dir"
        assert argv[argv.index(flag) + 1] == "runs/my demo"
