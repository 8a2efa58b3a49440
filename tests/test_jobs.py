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
import train_baseline
import train_gan
import visualize
from cli import EXIT_STOPPED

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "jobs", "*", "*"))) + [
    os.path.join(ROOT, "jobs", "resumable.sh")]
PARSERS = {"train_baseline.py": train_baseline.build_parser, "train_gan.py": train_gan.build_parser,
           "visualize.py": visualize.build_parser, "bench.py": bench.build_parser}


def test_there_are_slurm_and_pbs_scripts_for_every_job():
    names = {os.path.relpath(p, os.path.join(ROOT, "jobs")) for p in SCRIPTS}
    for job in ("baseline", "gan", "gan_multi", "visualize"):
        assert f"slurm/{job}.sbatch" in names and f"pbs/{job}.pbs" in names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_job_script_is_valid_bash_and_uses_only_real_flags(path):
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    text = open(path).read().replace("\\\n", " ")  # join continued lines
    if not path.endswith("resumable.sh"):
        assert "CHANGE_ME" in text.split("set -")[0]  # what a user must edit sits at the top
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(\w+\.py)((?:\s+[^\s;&|]+)*)", line):
            script, rest = m.group(1), m.group(2)
            parser = PARSERS[script]()
            known = parser._option_string_actions
            for token in shlex.split(rest):
                if token.startswith("--"):
                    flag = "--" + token.split("=")[0][2:].replace("-", "_")
                    assert flag in known, f"{script} has no flag {token}"
            if script == "visualize.py":
                assert shlex.split(rest)[0] in visualize.FIGURES


def test_time_limit_stops_with_a_checkpoint(tmp_path, capsys):
    argv = ["--dataset", "digits", "--width", "8", "--batch_size", "16", "--epochs", "50",
            "--lr", "2e-3", "--log_every", "1000", "--time_limit", "0.01",
            "--out_dir", str(tmp_path)]
    code, _, err = run_cli(train_baseline.main, argv, capsys)
    assert code == EXIT_STOPPED and "--time_limit reached" in err
    ckpt = torch.load(tmp_path / "baseline.ckpt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["step"] == 10  # the first look, after 10 steps


def test_resumable_sh_stops_the_trainer_and_requeues(tmp_path):
    """SIGUSR1 to the job script (SLURM's --signal=B:USR1) -> stop file -> checkpoint, exit 75
    -> the requeue command; the requeued job then finishes the run."""
    run, stop, requeued = tmp_path / "run", tmp_path / "run" / "STOP", tmp_path / "REQUEUED"
    train = [sys.executable, os.path.join(ROOT, "train_baseline.py"), "--dataset", "digits",
             "--width", "8", "--batch_size", "16", "--subset", "480", "--epochs", "3",
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
    assert ckpt["step"] > 0 and ckpt["epoch"] == 1, out  # stopped inside epoch 2
    again = subprocess.run(job + train, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["epochs"] == 3
    history = torch.load(run / "baseline.ckpt", weights_only=True)["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
