"""The files the project writes (utils/files.py): an --out_dir that cannot be written is
found before any data is loaded, a full disk keeps the last checkpoint and says how to
resume, a file-size limit is not called a full disk, a folder is held by one run at a time
(the lock goes with a kill -9), a JSON file is written whole or not at all, and killed
writers' temporary files go at the next start. Faults made for real: a read-only bind mount,
a small tmpfs, two processes in one folder."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, bind_read_only, last_line, run_cli, train

import train_baseline
import train_gan
from utils import files
from utils.rundir import read_records


# ----------------------------------------------------------------------------- the output folder

OUT_DIRS = {  # what stands where --out_dir points: what the one line says
    "a file": (lambda p: open(p, "w").close(), "is a file, not a folder"),
    "a link to nothing": (lambda p: os.symlink(p + ".gone", p), "which does not exist"),
    "a read-only folder": (bind_read_only, "read-only"),
    "a path too long": (None, "too long"),
}


@pytest.mark.parametrize("fault", list(OUT_DIRS))
def test_an_unusable_out_dir_is_found_before_any_data_is_loaded(fault, tmp_path, capsys):
    make, said = OUT_DIRS[fault]
    out = str(tmp_path / "out") if make else str(tmp_path / ("x" * 300))
    undo = make(out) if make else None
    try:  # a data folder that does not exist: the out_dir must be looked at first
        code, _, err = train(tmp_path / "no_data", out, capsys, "--epochs", "1")
        assert said in last_line(code, err), err
    finally:
        if callable(undo):
            undo()


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a chosen size (KiB), unmounted afterwards."""
    mounted = []

    def mount(kib):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                           capture_output=True)
        if r.returncode:
            pytest.skip("cannot mount a tmpfs here (root and mount(8) needed) for a full disk")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(folder, tmp_path, capsys,
                                                                      small_disk):
    argv = ["--epochs", "3"]
    ref = tmp_path / "ref"
    assert train(folder, ref, capsys, *argv)[0] == 0
    ckpt = os.path.getsize(ref / "baseline.ckpt")
    # room for one checkpoint and the other files, not for the second one's temporary copy
    others = sum(-(-os.path.getsize(ref / f) // 4096) * 4 for f in os.listdir(ref)
                 if f != "baseline.ckpt")
    disk = small_disk(-(-ckpt // 4096) * 4 + others + 12 + ckpt // 2048)
    out = disk / "run"
    code, _, err = train(folder, out, capsys, *argv)
    line = last_line(code, err)
    assert "no space left" in line or "disk may be full" in line, err
    assert "after epoch" in line and "--resume" in line, line
    kept = torch.load(out / "baseline.ckpt", weights_only=True)
    logged = [r["epoch"] for r in read_records(out / "baseline_log.jsonl")
              if r.get("event") == "epoch"]
    assert logged == list(range(1, kept["epoch"] + 1))  # never an epoch the checkpoint lacks
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # with room again, the resumed run ends where an uninterrupted one does
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    code, _, err = train(folder, moved, capsys, *argv, "--resume")
    assert code == 0, err
    a, b = (torch.load(d / "baseline.ckpt", weights_only=True)["model"] for d in (ref, moved))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [r["epoch"] for r in read_records(moved / "baseline_log.jsonl")
              if r.get("event") == "epoch"]
    assert logged == [1, 2, 3]


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


# ------------------------------------------------------------------- one run a folder, files whole

def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_two_runs_in_one_folder_the_second_is_refused_and_kill_9_leaves_no_lock(tmp_path,
                                                                                 capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train_baseline.py"), "--dataset", "digits",
           "--width", "4", "--epochs", "50", "--log_every", "1", "--out_dir", str(out)]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # training has begun: the folder is held
            if "step" in line:
                break
        code, _, err = run_cli(train_baseline.main, ["--dataset", "digits", "--width", "4",
                                                     "--epochs", "1", "--out_dir", str(out),
                                                     "--overwrite"], capsys)
        line = last_line(code, err)
        assert "in use by another baseline run" in line and f"pid {first.pid}" in line, line
        # the GAN's trainer writes other files: it shares the folder (the cluster jobs
        # submitted together do)
        code, _, err = run_cli(train_gan.main, ["--dataset", "digits", "--width", "4",
                                                "--epochs", "1", "--subset", "64",
                                                "--batch_size", "32", "--out_dir", str(out)],
                               capsys)
        assert code == 0, err
        assert first.poll() is None  # the classifier trains on
    finally:
        first.kill()  # kill -9: the kernel drops the lock with the process
        first.wait()
    code, _, err = run_cli(train_baseline.main, ["--dataset", "digits", "--width", "4",
                                                 "--epochs", "1", "--out_dir", str(out),
                                                 "--overwrite"], capsys)
    assert code == 0, err


def test_summary_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = str(tmp_path / "summary.json")
    files.update_json(path, "a", 1)

    def full(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", full)
    with pytest.raises(files.NoSpace):
        files.update_json(path, "b", 2)
    monkeypatch.undo()
    assert json.load(open(path)) == {"a": 1}
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_killed_writers_temporary_files_are_removed_on_the_next_start(folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    host, gone = files.host_label(), _dead_pid()
    dead = out / f".baseline.ckpt.cnn_gan.{host}.{gone}.tmp"
    kept = [out / f".baseline.ckpt.cnn_gan.{host}.{os.getppid()}.tmp",  # a live writer's
            out / f".baseline.ckpt.cnn_gan.elsewhere.{gone}.tmp",  # another host's process
            out / f".notes.txt.{gone}.tmp"]  # a user's file of a like name
    for f in [dead] + kept:
        f.write_bytes(b"half a file")
    assert train(folder, out, capsys, "--epochs", "1")[0] == 0
    assert not dead.exists() and all(f.exists() for f in kept)
