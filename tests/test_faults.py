"""Nothing a user's files, disk or second terminal can do ends in a traceback, a hang, a silent
wrong result or lost data: faults made for real (a FIFO, a 16-bit PNG, a looping link, a
read-only bind mount, a small tmpfs, two processes in one folder), one table per class."""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from PIL import Image

import metrics
import train_baseline
import train_gan
import visualize
from utils import data as data_module
from utils import files
from utils.data import load_dataset, load_folder
from utils.errors import DataError, UserError
from utils.images import read_image
from utils.quality import read_folder
from utils.rundir import RunFolder, read_records

TINY = ["--dataset", "folder", "--width", "4", "--batch_size", "8", "--log_every", "1000",
        "--lr", "1e-3"]


# ----------------------------------------------------------------------------- helpers

def png_bytes(a, bit_depth=8, size=None, idat=None):
    """A PNG file's bytes for a grey (H, W) or RGB (H, W, 3) array of 8 or 16 bits; size and
    idat override the header's size and the pixel data (a decompression bomb)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    h, w = a.shape[:2]
    header = struct.pack(">IIBBBBB", *(size or (w, h)), bit_depth, 0 if a.ndim == 2 else 2,
                         0, 0, 0)
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in a)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
            chunk(b"IDAT", zlib.compress(raw) if idat is None else idat) + chunk(b"IEND", b""))


def make_folder(root, classes=("a", "b"), train=8, test=4, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    os.path.join(root, split, c, f"{i}.png"))
    return str(root)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data")


def digest(folder):
    """Every file's bytes under folder (the lock file aside): what 'untouched' means."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            if not (n.startswith(".cnn_gan") and n.endswith(".lock")):
                p = os.path.join(dirpath, n)
                out[os.path.relpath(p, folder)] = hashlib.sha1(open(p, "rb").read()).hexdigest()
    return out


def one_line(code, err, expected_code=2):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code and lines and "Traceback" not in err, (code, err)
    return lines[-1]


@contextlib.contextmanager
def no_hang(seconds=60):
    def fail(*a):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def train(data_dir, out, capsys, *extra, cache=None):
    cache = cache or os.path.join(os.path.dirname(str(out)), "cache")
    return run_cli(train_baseline.main, TINY + ["--data_dir", str(data_dir), "--out_dir", str(out),
                                                "--cache_dir", cache, *extra], capsys)


# ----------------------------------------------------------------------------- bad images

def _fifo(path):
    os.mkfifo(path)


def _broken_link(path):
    os.symlink(path + ".gone", path)


def _looping_link(path):
    os.symlink(os.path.basename(path), path)


def _empty(path):
    open(path, "wb").close()


def _truncated(path):
    with open(path, "wb") as f:
        f.write(png_bytes(np.zeros((32, 32, 3), np.uint8))[:60])


def _bomb(path):
    with open(path, "wb") as f:  # 20,000 x 20,000 pixels claimed, a few bytes of data
        f.write(png_bytes(np.zeros((1, 1), np.uint8), size=(20000, 20000),
                          idat=zlib.compress(b"\0\0")))


def _float_mode(path):
    Image.fromarray(np.zeros((32, 32), np.float32), mode="F").save(path[:-4] + ".tif")
    os.replace(path[:-4] + ".tif", path)


BAD_IMAGES = {  # how the file is broken: what the one line says
    "fifo": (_fifo, "not a regular file"),
    "broken link": (_broken_link, "cannot read"),
    "looping link": (_looping_link, "cannot read"),
    "zero bytes": (_empty, "is empty"),
    "truncated": (_truncated, "cannot decode"),
    "decompression bomb": (_bomb, "cannot decode"),
    "float image": (_float_mode, "not supported"),
}


@pytest.mark.parametrize("fault", list(BAD_IMAGES))
def test_a_bad_image_file_is_one_line_in_training_and_in_metrics(fault, folder, tmp_path, capsys):
    make, said = BAD_IMAGES[fault]
    path = os.path.join(folder, "train", "b", "3.png")
    os.remove(path)
    make(path)
    with no_hang():
        code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert said in one_line(code, err), err
    assert not os.path.exists(tmp_path / "run")  # nothing written, the folder it made removed
    with no_hang(), pytest.raises(UserError, match=said):
        read_folder(os.path.join(folder, "train", "b"))


def test_names_that_are_not_utf8_are_refused_by_name(folder, tmp_path, capsys):
    bad = os.path.join(folder, "train", "a").encode() + b"/\xff\xfe.png"
    shutil.copy(os.path.join(folder, "train", "a", "0.png"), bad)
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert "not valid UTF-8" in one_line(code, err) and "\\xff" in err
    os.remove(bad)
    train_dir = os.path.join(folder, "train")
    os.rename(os.path.join(train_dir, "b"), train_dir.encode() + b"/b\xff")
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert "not valid UTF-8" in one_line(code, err)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    levels = np.array([0, 257, 32768, 65535], np.uint16)
    grey16 = np.tile(levels, (32, 8))  # (32, 32): four 16-bit levels
    expected = np.tile(np.array([0, 1, 128, 255], np.uint8), (32, 8))
    p = tmp_path / "g16.png"
    p.write_bytes(png_bytes(grey16, 16))
    assert Image.open(p).mode == "I;16"
    assert np.array_equal(read_image(str(p))[..., 0], expected)
    assert np.array_equal(read_image(str(p), channels=3), np.repeat(expected[..., None], 3, -1))
    rgb16 = np.stack([grey16, grey16 // 2, grey16], -1)
    p = tmp_path / "c16.png"
    p.write_bytes(png_bytes(rgb16, 16))
    assert read_image(str(p))[0, 3].tolist() == [255, 127, 255]  # the high byte of each value
    # a folder of 16-bit PNGs trains on the right pixels, and metrics.py reads them so too
    root = make_folder(tmp_path / "data")
    for split, n in (("train", 8), ("test", 4)):
        for c in ("a", "b"):
            for i in range(n):
                with open(os.path.join(root, split, c, f"{i}.png"), "wb") as f:
                    f.write(png_bytes(grey16, 16))
    d = load_folder(root, str(tmp_path / "cache"))
    assert torch.equal(d.train_x[5, 2], torch.from_numpy(expected))
    x, _ = read_folder(os.path.join(root, "train", "a"))
    assert x.shape == (8, 1, 32, 32) and torch.equal(x[0, 0], torch.from_numpy(expected))


LAYOUTS = {  # how the folder is laid out wrong: what the one line says
    "empty class folder": (lambda r: os.makedirs(os.path.join(r, "train", "c")),
                           "holds no images"),
    "class only in test/": (lambda r: make_folder(os.path.join(r, "extra"), ("c",)) and
                            os.replace(os.path.join(r, "extra", "test", "c"),
                                       os.path.join(r, "test", "c")), "not in train/"),
    "class missing from test/": (lambda r: shutil.rmtree(os.path.join(r, "test", "b")),
                                 "missing ['b']"),
    "nested subfolder": (lambda r: os.makedirs(os.path.join(r, "train", "a", "more")),
                         "folder inside a class folder"),
    "image outside a class": (lambda r: shutil.copy(os.path.join(r, "train", "a", "0.png"),
                                                    os.path.join(r, "train", "x.png")),
                              "belong in a folder per class"),
}


@pytest.mark.parametrize("fault", list(LAYOUTS))
def test_the_folder_layout_is_what_the_user_meant_or_one_line(fault, folder, tmp_path, capsys):
    make, said = LAYOUTS[fault]
    make(folder)
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert said in one_line(code, err), err


def test_files_that_are_not_images_are_ignored_as_documented(folder, tmp_path):
    (tmp_path / "data" / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    assert len(load_folder(folder, str(tmp_path / "cache")).train_y) == 16


CACHE_DAMAGE = {
    "random bytes": lambda p: open(p, "wb").write(os.urandom(300)),
    "truncated": lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
    "empty": lambda p: open(p, "wb").close(),
    "arrays missing": lambda p: np.savez(p[:-4], train_x=np.zeros(3)),
    "wrong dtype": lambda p: np.savez(p[:-4], train_x=np.zeros((2, 3, 32, 32)),
                                      train_y=np.zeros(2), test_x=np.zeros((1, 3, 32, 32)),
                                      test_y=np.zeros(1), classes=np.array(["a"])),
}


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_a_damaged_decoded_image_cache_is_rebuilt(damage, folder, tmp_path):
    cache = str(tmp_path / "cache")
    first = load_folder(folder, cache)
    (name,) = os.listdir(cache)
    CACHE_DAMAGE[damage](os.path.join(cache, name))
    again = load_folder(folder, cache)
    assert torch.equal(again.train_x, first.train_x) and again.classes == first.classes
    assert torch.equal(load_folder(folder, cache).test_x, first.test_x)  # and cached again


def test_a_link_to_the_folder_shares_its_cache(folder, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    load_folder(folder, cache)
    os.symlink(folder, tmp_path / "link")
    from utils import images
    monkeypatch.setattr(images, "decode_split", lambda *a, **k: pytest.fail("decoded again"))
    load_folder(str(tmp_path / "link"), cache)


# ----------------------------------------------------------------------------- the output folder

def _bind_read_only(path):
    os.makedirs(path)
    r = subprocess.run(["mount", "--bind", path, path], capture_output=True)
    r2 = subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True)
    if r.returncode or r2.returncode:
        subprocess.run(["umount", path], capture_output=True)
        pytest.skip("no bind mounts here (root and mount(8) needed) for a read-only folder")
    return lambda: subprocess.run(["umount", path], capture_output=True)


OUT_DIRS = {  # what stands where --out_dir points: what the one line says
    "a file": (lambda p: open(p, "w").close(), "is a file, not a folder"),
    "a read-only folder": (_bind_read_only, "read-only"),
    "a path too long": (None, "too long"),
}


@pytest.mark.parametrize("fault", list(OUT_DIRS))
def test_an_unusable_out_dir_is_found_before_any_data_is_loaded(fault, tmp_path, capsys):
    make, said = OUT_DIRS[fault]
    out = str(tmp_path / "out") if make else str(tmp_path / ("x" * 300))
    undo = make(out) if make else None
    try:  # a data folder that does not exist: the out_dir must be looked at first
        code, _, err = train(tmp_path / "no_data", out, capsys, "--epochs", "1")
        assert said in one_line(code, err), err
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
    line = one_line(code, err)
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


# ----------------------------------------------------------------------------- data kept

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
        line = one_line(code, err)
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


@pytest.mark.slow
def test_resume_writes_only_into_its_own_run_or_an_empty_folder(folder, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train(folder, a, capsys, "--epochs", "2")[0] == 0
    assert train(folder, b, capsys, "--epochs", "1")[0] == 0
    before = digest(b)
    code, _, err = train(folder, b, capsys, "--epochs", "2", "--resume", str(a / "baseline.ckpt"))
    assert "holds another run" in one_line(code, err)
    assert digest(b) == before
    code, _, err = train(folder, c, capsys, "--epochs", "2", "--resume", str(a / "baseline.ckpt"))
    assert code == 0, err  # an empty folder takes the resumed run


def test_overwrite_killed_before_its_first_checkpoint_leaves_the_earlier_run_whole(
        folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train(folder, out, capsys, "--epochs", "1")[0] == 0
    before = digest(out)

    def crash(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(train_baseline.BaselineTrainer, "step", crash)
    with pytest.raises(RuntimeError):
        train(folder, out, capsys, "--epochs", "1", "--lr", "5e-4", "--overwrite")
    monkeypatch.undo()
    staged = {f for f in digest(out) if f.endswith(".staged")}
    assert staged and {k: v for k, v in digest(out).items() if k not in staged} == before
    # the next start removes the staged leftovers; a finished --overwrite leaves the new run
    code, _, err = train(folder, out, capsys, "--epochs", "1", "--lr", "5e-4", "--overwrite")
    assert code == 0, err
    assert json.load(open(out / "baseline_config.json"))["lr"] == 5e-4
    assert not [f for f in os.listdir(out) if f.startswith(".baseline")]


def test_a_replacement_cut_short_is_finished_by_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("baseline.ckpt", "cifar10.model", "baseline_curves.png"):
        (out / name).write_text("the earlier run's")
    (out / ".baseline_config.json.staged").write_text("{}")
    (out / "baseline_config.json").write_text("the earlier run's")
    plan = {"remove": ["baseline.ckpt", "cifar10.model", "baseline_curves.png",
                       "baseline_config.json"],
            "rename": [[".baseline_config.json.staged", "baseline_config.json"]]}
    files.atomic_write_json(str(out / ".baseline.replace.json"), plan)
    os.remove(out / "baseline.ckpt")  # the crash came after the first removal
    RunFolder(str(out), "baseline", ("cifar10.model",)).take().release()
    assert sorted(os.listdir(out)) == ["baseline_config.json"]
    assert (out / "baseline_config.json").read_text() == "{}"


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
    dead = out / f".baseline.ckpt.{_dead_pid()}.tmp"
    live = out / f".baseline.ckpt.{os.getppid()}.tmp"  # a live writer's: kept
    dead.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    assert train(folder, out, capsys, "--epochs", "1")[0] == 0
    assert not dead.exists() and live.exists()


@pytest.mark.slow
def test_export_never_deletes_what_it_did_not_write(digits_gan, tmp_path, capsys):
    run, _ = digits_gan
    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "00001.png").write_bytes(b"the user's own picture")
    code, _, err = run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", "5",
                                            "--out_dir", str(mine)], capsys)
    assert "did not write" in one_line(code, err)
    assert (mine / "00001.png").read_bytes() == b"the user's own picture"
    out = tmp_path / "export"
    for n in (12, 4):  # a second export into its own folder replaces its own files only
        assert run_cli(visualize.main, ["export", "--run_dir", str(run), "--n", str(n),
                                        "--out_dir", str(out)], capsys)[0] == 0
        (out / "notes.txt").write_text("the user's note")
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == [f"{i:05d}_c{i}.png" for i in range(4)]
    assert (out / "notes.txt").exists()


# ----------------------------------------------------------------------------- silently wrong

def _stopped_after_one_step(folder, out, capsys, *extra):
    stop = os.path.join(os.path.dirname(str(out)), "STOP")
    open(stop, "w").close()
    code, _, err = train(folder, out, capsys, "--epochs", "2", "--stop_file", stop, *extra)
    os.remove(stop)
    assert code == 75, err
    return err


def test_a_resume_continues_on_the_same_data(folder, tmp_path, capsys):
    out = tmp_path / "run"
    _stopped_after_one_step(folder, out, capsys)
    other = make_folder(tmp_path / "other", seed=1)  # the same classes and sizes, other images
    code, _, err = train(other, out, capsys, "--epochs", "2", "--resume")
    assert "trained on other data" in one_line(code, err)
    shutil.copytree(folder, tmp_path / "copy")  # the same images elsewhere: fine
    code, _, err = train(tmp_path / "copy", out, capsys, "--epochs", "2", "--resume")
    assert code == 0, err


def test_flipped_bytes_inside_a_checkpoint_are_refused(folder, tmp_path, capsys):
    out = tmp_path / "run"
    _stopped_after_one_step(folder, out, capsys)
    path = out / "baseline.ckpt"
    with zipfile.ZipFile(path) as z:  # the largest tensor's bytes, stored uncompressed
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    code, _, err = train(folder, out, capsys, "--epochs", "2", "--resume")
    assert "damaged" in one_line(code, err), err


@pytest.mark.slow
def test_a_model_shown_other_data_is_refused_before_anything_is_written(digits_baseline, folder,
                                                                        tmp_path, capsys):
    out = tmp_path / "vis"
    code, _, err = run_cli(visualize.main, ["perturb", "--model", "baseline", "--baseline_model",
                                            digits_baseline[0], "--dataset", "folder",
                                            "--data_dir", folder, "--cache_dir",
                                            str(tmp_path / "cache"), "--out_dir", str(out)],
                           capsys)
    assert "names the classes" in one_line(code, err)
    assert not os.path.exists(out) or not [f for f in os.listdir(out) if f.endswith(".png")]


@pytest.mark.slow
def test_cacc_with_a_classifier_of_other_classes_is_refused(digits_gan, folder, tmp_path, capsys):
    clf = tmp_path / "clf"
    assert train(folder, clf, capsys, "--epochs", "1")[0] == 0  # classes a, b
    run, _ = digits_gan
    code, _, err = run_cli(metrics.main, [str(run), "--metrics", "cacc", "--classifier",
                                          str(clf / "cifar10.model"), "--n_samples", "20"],
                           capsys)
    assert "names the classes" in one_line(code, err)


def test_stop_files_say_what_was_found(folder, tmp_path, capsys):
    err = _stopped_after_one_step(folder, tmp_path / "run", capsys)
    assert err.count("before training started") == 1 and "stopping after this step" not in err
    (tmp_path / "a_folder").mkdir()
    code, _, err = train(folder, tmp_path / "run2", capsys, "--epochs", "1", "--stop_file",
                         str(tmp_path / "a_folder"))
    assert "is a folder" in one_line(code, err)


# ------------------------------------------------------------------------ one line, not a traceback

def test_metrics_with_too_few_images_says_so(digits_baseline, tmp_path, capsys):
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(fakes / "00000.png")
    code, _, err = run_cli(metrics.main, [str(fakes), "--real", "digits", "--metrics", "cfid",
                                          "--classifier", digits_baseline[0]], capsys)
    assert "at least 10" in one_line(code, err)


def test_data_messages_say_what_is_wrong(mnist_dir, tmp_path):
    d = tmp_path / "m"
    (d / "MNIST" / "raw").mkdir(parents=True)
    for f in os.listdir(os.path.join(mnist_dir, "MNIST", "raw")):
        os.symlink(os.path.join(mnist_dir, "MNIST", "raw", f), d / "MNIST" / "raw" / f)
    target = d / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.unlink()
    target.write_bytes(open(os.path.join(mnist_dir, "MNIST", "raw", target.name), "rb")
                       .read(1000))  # truncated
    with pytest.raises(DataError, match="damaged or incomplete"):
        load_dataset("mnist", str(d))
    (tmp_path / "a_file").write_text("x")
    for name in ("mnist", "folder", "cifar10"):
        with pytest.raises(DataError, match="is a file, not a folder"):
            load_dataset(name, str(tmp_path / "a_file"))


def test_a_finished_run_resumed_says_it_is_finished(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(folder, out, capsys, "--epochs", "1")[0] == 0
    code, out_text, err = train(folder, out, capsys, "--epochs", "1", "--resume", "auto")
    assert code == 0 and "is finished (1 of 1 epochs)" in err and "at epoch 2" not in err
    assert json.loads(out_text.splitlines()[-1])["epochs"] == 1


def test_a_signal_while_starting_is_said(folder, tmp_path, capsys, monkeypatch):
    real = data_module.load_dataset

    def signalled(*a, **k):  # SIGTERM arrives while the data loads
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    monkeypatch.setattr(data_module, "load_dataset", signalled)
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert "received SIGTERM while starting" in one_line(code, err, 75)
    assert not os.path.exists(tmp_path / "run")
