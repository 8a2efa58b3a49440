"""Several processes (gloo on the CPU) and stopping on a signal."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT

import train_baseline
import train_gan
from cli import EXIT_STOPPED

TINY = ["--dataset", "digits", "--width", "8", "--lr", "2e-3", "--log_every", "1000"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, script, argv, out):
    """One process as torchrun would start it; it saves the weights it ends up holding."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    module = {"baseline": train_baseline, "gan": train_gan}[script]
    _, trained = module.run(module.build_parser().parse_args(argv))
    nets = {"model": trained} if script == "baseline" else {"G": trained.G, "D": trained.D}
    torch.save({k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in nets.items()},
               os.path.join(out, f"rank{rank}.pt"))


@pytest.mark.parametrize("script", ["baseline", "gan"])
def test_two_processes_hold_identical_weights_and_only_rank0_writes(script, tmp_path):
    run_dir = tmp_path / "run"
    argv = TINY + ["--subset", "256", "--batch_size", "32", "--epochs", "2",
                   "--out_dir", str(run_dir)]
    mp.spawn(_worker, args=(2, _free_port(), script, argv, str(tmp_path)), nprocs=2)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    for net in a:
        for name, t in a[net].items():
            if "running" in name or "num_batches" in name:
                continue  # BatchNorm statistics are each process's own (see --sync_bn)
            assert torch.equal(t, b[net][name]), (net, name)
    # the saved model is what the processes hold
    kind = "cifar10.model" if script == "baseline" else "discriminator.model"
    saved = torch.load(run_dir / kind, weights_only=True)["model"]
    ours = a["model"] if script == "baseline" else a["D"]
    assert all(torch.equal(saved[k], ours[k]) for k in saved)
    log = [json.loads(line) for line in open(next(run_dir.glob("*_log.jsonl")))]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [1, 2]  # one writer
    if script == "gan":
        assert sorted(os.listdir(run_dir / "output")) == ["000.png", "001.png"]


def _cmd(script, out, *extra):
    return [sys.executable, os.path.join(ROOT, f"train_{script}.py"), *TINY, "--subset", "640",
            "--batch_size", "32", "--epochs", "3", "--log_every", "2", "--out_dir", str(out),
            *extra]


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.parametrize("script", ["baseline", "gan"])
def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(script, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = subprocess.Popen(_cmd(script, straight), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(_cmd(script, stopped), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = stopped / f"{script if script == 'gan' else 'baseline'}_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is a few steps into epoch 2
        if log.exists() and any(json.loads(line).get("epoch") == 2 and
                                json.loads(line).get("event") == "step"
                                for line in log.read_text().splitlines()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, err
    assert "stopped at epoch 2" in err and "Traceback" not in err
    ckpt = torch.load(stopped / f"{script}.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and 0 < ckpt["step"] < 20  # mid-epoch: 20 steps per epoch
    resumed = subprocess.run(_cmd(script, stopped, "--resume", "auto"), env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    for name in (("cifar10.model",) if script == "baseline" else
                 ("generator.model", "discriminator.model")):
        a, b = _weights(straight / name), _weights(stopped / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    h1 = torch.load(straight / f"{script}.ckpt", weights_only=True)["history"]
    h2 = torch.load(stopped / f"{script}.ckpt", weights_only=True)["history"]
    timing = ("seconds", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]  # noqa: E731
    assert strip(h1) == strip(h2)  # the interrupted epoch's figures too


def test_resume_auto_starts_fresh_without_a_checkpoint(tmp_path, capsys):
    from conftest import run_cli

    code, out, err = run_cli(train_baseline.main, TINY + ["--subset", "64", "--batch_size", "32",
                                                          "--epochs", "1", "--resume", "auto",
                                                          "--out_dir", str(tmp_path)], capsys)
    assert code == 0 and "resuming" not in err
    code, out, err = run_cli(train_baseline.main, TINY + ["--subset", "64", "--batch_size", "32",
                                                          "--epochs", "1", "--resume", "auto",
                                                          "--out_dir", str(tmp_path)], capsys)
    assert code == 0 and "resuming" in err  # the same command again picks the run up


def test_batch_must_divide_among_processes():
    from cli import UserError
    from distributed import Dist

    assert Dist(0, 4).per_rank_batch(128) == 32
    with pytest.raises(UserError, match="global batch"):
        Dist(0, 3).per_rank_batch(128)
