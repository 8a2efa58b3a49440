"""Several processes (gloo on the CPU), a lost torchrun peer, and stopping on a signal or a
stop file."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, last_line, run_cli, stopped_after_one_step, train

import train_baseline
import train_gan
from utils.errors import EXIT_STOPPED, UserError

TINY = ["--dataset", "digits", "--width", "8", "--lr", "2e-3", "--log_every", "1000"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# script: its flags beyond TINY's. dcgan: a BatchNorm critic, which sees real and fake in two
# passes before one backward; modern: spectral norm, DiffAugment and the EMA generator, the
# same on every rank.
PAIRS = {
    "baseline": [],
    "gan": [],
    "dcgan": ["--recipe", "udacity-dcgan-svhn", "--dataset", "digits"],
    "modern": ["--recipe", "cnn-gan-modern", "--dataset", "digits", "--ema", "0.9"],
}


def _worker(rank, world, ports, out):
    """One process as torchrun would start it, running each script of PAIRS in turn (one pair
    of processes for all four: each start costs seconds); it saves the weights it ends up
    holding."""
    torch.set_num_threads(1)
    for (script, extra), port in zip(PAIRS.items(), ports):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        argv = TINY + ["--subset", "256", "--batch_size", "32", "--epochs", "2",
                       "--out_dir", os.path.join(out, script), *extra]
        module = train_baseline if script == "baseline" else train_gan
        _, trained = module.run(module.resolve(argv))
        nets = {"model": trained} if script == "baseline" else {"G": trained.G, "D": trained.D}
        if script != "baseline" and trained.G_ema is not None:
            nets["G_ema"] = trained.G_ema  # every rank's moving average, from the same weights
        torch.save({k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in nets.items()},
                   os.path.join(out, f"{script}-rank{rank}.pt"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    mp.spawn(_worker, args=(2, [_free_port() for _ in PAIRS], str(out)), nprocs=2)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("script", list(PAIRS))
def test_two_processes_hold_identical_weights_and_only_rank0_writes(script, pairs):
    run_dir = pairs / script
    a, b = (torch.load(pairs / f"{script}-rank{r}.pt", weights_only=True) for r in range(2))
    for net in a:
        for name, t in a[net].items():
            if "running" in name or "num_batches" in name:
                continue  # BatchNorm statistics are each process's own on the CPU (SyncBatchNorm
                # needs CUDA): the weights are what the processes must agree on
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


@pytest.mark.slow
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
    timing = ("seconds", "images_per_s", "peak_mib")
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
    assert code == 0 and "is finished (1 of 1 epochs)" in err  # the same command picks the
    # finished run up, and says that nothing is left to train


def test_batch_must_divide_among_processes():
    from utils.errors import UserError
    from utils.distributed import Dist

    assert Dist(0, 4).per_rank_batch(128) == 32
    with pytest.raises(UserError, match="global batch"):
        Dist(0, 3).per_rank_batch(128)


def _pair(cmd, tmp_path, name):
    """Two processes as torchrun starts them (gloo on the CPU); their output goes to files."""
    port, procs = _free_port(), []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
        err = open(tmp_path / f"{name}{rank}.err", "w")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
    return procs


@pytest.mark.slow
def test_two_processes_stop_together_on_a_stop_file_and_resume_exactly(tmp_path):
    straight, stopped, stop = tmp_path / "straight", tmp_path / "stopped", tmp_path / "STOP"
    cmd = lambda out, *x: [sys.executable, os.path.join(ROOT, "train_baseline.py"), *TINY,  # noqa
                           "--subset", "640", "--batch_size", "32", "--epochs", "8",
                           "--log_every", "2", "--out_dir", str(out), "--stop_file", str(stop),
                           *x]
    ref = _pair(cmd(straight, "--stop_file", str(tmp_path / "never")), tmp_path, "ref")
    procs = _pair(cmd(stopped), tmp_path, "run")
    log = stopped / "baseline_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"epoch": 2, "step"' in
                                          log.read_text()):
        time.sleep(0.05)
    stop.touch()
    codes = [p.wait(timeout=120) for p in procs]
    errs = [(tmp_path / f"run{r}.err").read_text() for r in range(2)]
    assert codes == [EXIT_STOPPED, EXIT_STOPPED], errs
    # the file is looked for once a second: the ranks stopped together soon after, mid-epoch
    # or at an epoch's end
    ckpt = torch.load(stopped / "baseline.ckpt", weights_only=True)
    assert 1 <= ckpt["epoch"] < 8 and 0 <= ckpt["step"] < 20, (ckpt["epoch"], ckpt["step"])
    assert f"found {stop}" in errs[0] and "stopped at epoch" in errs[0], errs
    assert "stopped at epoch" not in errs[1], errs  # said once, by rank 0, for both
    stop.unlink()
    codes = [p.wait(timeout=300) for p in _pair(cmd(stopped, "--resume", "auto"), tmp_path,
                                                "resumed")]
    assert codes == [0, 0], (tmp_path / "resumed0.err").read_text()
    assert [p.wait(timeout=300) for p in ref] == [0, 0], (tmp_path / "ref0.err").read_text()
    a, b = _weights(straight / "cifar10.model"), _weights(stopped / "cifar10.model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    h1 = torch.load(straight / "baseline.ckpt", weights_only=True)["history"]
    h2 = torch.load(stopped / "baseline.ckpt", weights_only=True)["history"]
    assert [r["test_acc"] for r in h1] == [r["test_acc"] for r in h2]


def _stop_worker(rank, world, port, out):
    import signal as sig

    from utils.distributed import Dist, StopSignal

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    stop = StopSignal(Dist(rank, world))
    answers = []
    for step in range(8):
        if rank == 1 and step == 3:
            stop.received = sig.SIGTERM  # what the handler does: rank 1 alone is asked
        answers.append(stop())
        if answers[-1]:
            break
    reason, stop.received, stop.reason = stop.reason, None, None
    second = StopSignal(Dist(rank, world))
    if rank == 0:
        second.received = sig.SIGUSR1  # asked just before an epoch's end
    settled = second.settle()
    torch.save({"answers": answers, "settled": settled, "reason": reason},
               os.path.join(out, f"stop{rank}.pt"))
    stop.restore()
    second.restore()
    from conftest import leave_group
    leave_group(rank, world, out)


@pytest.mark.slow
def test_ranks_agree_to_stop_after_the_same_step(tmp_path):
    """Rank 1 alone is asked after step 3: both ranks answer 'stop' after step 4 (the
    agreement started after step 3 is read then), and neither earlier; at an epoch's end the
    agreement is immediate. Rank 0, which speaks for the job, says that another was asked."""
    mp.spawn(_stop_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    results = [torch.load(tmp_path / f"stop{r}.pt", weights_only=True) for r in range(2)]
    for res in results:
        assert res["answers"] == [False] * 4 + [True]
        assert res["settled"] is True
    assert [r["reason"] for r in results] == ["another process was asked to stop",
                                              "received SIGTERM"]


@pytest.mark.parametrize("env, words", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 is out of range"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is out of range (0 to 1)"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "LOCAL_RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, "MASTER_ADDR is not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h"},
     "MASTER_PORT is not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
      "MASTER_PORT": "70000"}, "MASTER_PORT=70000 is out of range (1 to 65535)"),
    ({"RANK": "first"}, "RANK='first'"),  # a single process: still checked (the final line)
])
def test_torchruns_variables_are_checked_before_anything_starts(env, words):
    from utils.distributed import torchrun_env

    with pytest.raises(UserError) as e:
        torchrun_env(env)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert "torchrun" in str(e.value)


def test_torchruns_variables_when_they_are_right():
    from utils.distributed import torchrun_env

    assert torchrun_env({}) == (0, 1, 0)
    assert torchrun_env({"WORLD_SIZE": "1", "RANK": "0"}) == (0, 1, 0)
    assert torchrun_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1",
                         "MASTER_ADDR": "node7", "MASTER_PORT": "29500"}) == (3, 4, 1)


def test_a_trainer_with_a_partial_torchrun_environment_is_one_line(tmp_path, capsys,
                                                                   monkeypatch):
    import train_baseline

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    code, _, err = run_cli(train_baseline.main, ["--dataset", "digits", "--width", "8",
                                                 "--out_dir", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and "RANK is not set" in err, err
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")


@pytest.mark.slow
def test_sigterm_ends_a_wait_for_processes_that_never_come(tmp_path):
    """Rank 0 of 2 alone waits in the rendezvous, inside C++ where Python's handlers cannot
    run: the stop signals keep their default there, so a scheduler's SIGTERM ends it."""
    port = _free_port()
    env = dict(os.environ, WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_gan.py"), "--dataset",
                             "digits", "--width", "8", "--epochs", "1", "--out_dir",
                             str(tmp_path / "run")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:  # rank 0 opens the rendezvous
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        time.sleep(0.5)  # inside init_process_group, waiting for rank 1
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
    assert not (tmp_path / "run").exists()  # nothing was written before the group was whole


@pytest.mark.slow
def test_a_peer_killed_mid_run_is_one_line_in_the_survivor(tmp_path):
    """kill -9 of one of two processes while they train: the other says so in one line and
    exits 4 (not gloo's traceback); the run's last checkpoint stays for --resume."""
    from utils.errors import EXIT_PEER_LOST

    port, procs = _free_port(), []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train_baseline.py"), "--dataset", "digits",
             "--width", "4", "--epochs", "50", "--log_every", "1", "--device", "cpu",
             "--amp", "off", "--out_dir", str(tmp_path / "run")],
            env=env, stderr=subprocess.PIPE, text=True))
    try:
        for line in procs[0].stderr:  # both are training
            if " step " in line:
                break
        procs[1].send_signal(signal.SIGKILL)
        err = procs[0].stderr.read()
        assert procs[0].wait(timeout=120) == EXIT_PEER_LOST, err[-2000:]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: another process of this torchrun job stopped"), err[-2000:]
    assert re.search(r"Connection (closed|reset) by peer", last) and "--resume" in last
    assert "Traceback" not in err


def test_stop_files_say_what_was_found(folder, tmp_path, capsys):
    err = stopped_after_one_step(folder, tmp_path / "run", capsys)
    assert err.count("before training started") == 1 and "stopping after this step" not in err
    (tmp_path / "a_folder").mkdir()
    code, _, err = train(folder, tmp_path / "run2", capsys, "--epochs", "1", "--stop_file",
                         str(tmp_path / "a_folder"))
    assert "is a folder" in last_line(code, err)


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


def test_the_rendezvous_says_what_it_waits_for_and_restores_the_handlers(monkeypatch, capsys):
    """join_group: the stop signals at their default during the wait, a line once it is long,
    the handlers as they were afterwards (init_process_group stands in: it sleeps)."""
    from utils import distributed

    seen = {}

    def slow_init(backend):
        seen["during"] = signal.getsignal(signal.SIGTERM)
        time.sleep(0.5)

    def mine(signum, frame):
        pass

    monkeypatch.setattr(distributed, "WAIT_NOTE_S", 0.1)
    monkeypatch.setattr(torch.distributed, "init_process_group", slow_init)
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        distributed.join_group("gloo", 2)
        assert seen["during"] == signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "waiting for the 2 processes of this torchrun job" in capsys.readouterr().err
