"""Atomic checkpoints and the checks on every file loaded: a resume on other data, flipped
bytes inside a checkpoint."""
import os
import pickle
import shutil
import zipfile

import pytest
import torch
from conftest import last_line, make_folder, stopped_after_one_step, train

from utils.checkpoints import atomic_save, load_checkpoint
from utils.errors import UserError


def test_atomic_save_keeps_the_last_good_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "a.ckpt")
    atomic_save({"kind": "x", "v": 1}, path)

    def crash(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(UserError, match="cannot write"):  # one line, not a traceback
        atomic_save({"kind": "x", "v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["v"] == 1
    assert os.listdir(tmp_path) == ["a.ckpt"]  # no temporary file left behind


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_checkpoint_refuses_bad_files(tmp_path, recwarn):
    good = str(tmp_path / "good.ckpt")
    atomic_save({"kind": "baseline", "w": torch.ones(1000)}, good)
    raw = open(good, "rb").read()
    cases = {"truncated": raw[: len(raw) // 2], "garbage": os.urandom(500), "empty": b""}
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(UserError, match="not a readable checkpoint"):
            load_checkpoint(str(p))
    p = tmp_path / "code.ckpt"
    with open(p, "wb") as f:
        pickle.dump({"kind": "baseline", "x": Evil()}, f)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(str(p))  # weights_only refuses to run code
    # torch's multi-line warning about the pickle's protocol stays off the user's screen
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]
    torch.save([1, 2], str(tmp_path / "list.ckpt"))
    with pytest.raises(UserError, match="not written by this project"):
        load_checkpoint(str(tmp_path / "list.ckpt"))
    with pytest.raises(UserError, match="'baseline' checkpoint, not 'gan'"):
        load_checkpoint(good, kind="gan")
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))


# ----------------------------------------------------------------------------- damaged files
# Every consumer of a checkpoint or model file meets every damage as one line and exit 2.

from conftest import run_cli  # noqa: E402

import train_baseline  # noqa: E402
import train_gan  # noqa: E402
import visualize  # noqa: E402
from utils.checkpoints import MODEL_FIELDS, PROGRESS_FIELDS  # noqa: E402

TINY = ["--dataset", "digits", "--width", "8", "--batch_size", "32", "--subset", "64",
        "--epochs", "1", "--lr", "2e-3", "--log_every", "1000"]
WRONG = {"tensor": lambda: torch.zeros(2, 2), "list": lambda: [1, 2], "none": lambda: None}
TARGETS = {  # what reads the file: its entries, and the command that reads it from a path
    "baseline.ckpt": ({**PROGRESS_FIELDS, **train_baseline.BaselineTrainer.fields},
                      lambda p, d: (train_baseline.main, TINY + ["--out_dir", d, "--resume", p])),
    "gan.ckpt": ({**PROGRESS_FIELDS, **train_gan.GanTrainer.fields},
                 lambda p, d: (train_gan.main, TINY + ["--out_dir", d, "--resume", p])),
    "cifar10.model": (MODEL_FIELDS, lambda p, d: (visualize.main, [
        "perturb", "--model", "baseline", "--baseline_model", p, "--run_dir", d])),
    "generator.model": (MODEL_FIELDS, lambda p, d: (visualize.main, [
        "samples", "--generator_model", p, "--run_dir", d])),
}


def _cases():
    for target, (fields, _) in TARGETS.items():
        for key in ["kind", *fields]:
            yield target, key, "dropped"
            for name, make in WRONG.items():
                valid = isinstance(make(), str) if key == "kind" else fields[key].ok(make())
                if not valid:
                    yield target, key, name


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """A real checkpoint and model file of each kind, from one-epoch runs on digits."""
    out = tmp_path_factory.mktemp("real")
    train_baseline.main(TINY + ["--out_dir", str(out)])
    train_gan.main(TINY + ["--out_dir", str(out)])
    return out


def _refused(capsys, target, path, workdir):
    main, argv = TARGETS[target][1](str(path), str(workdir))
    code, _, err = run_cli(main, argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert str(path) in err, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("target,key,damage", list(_cases()))
def test_every_missing_or_mistyped_entry_is_one_line(real_files, tmp_path, capsys, target, key,
                                                     damage):
    ckpt = torch.load(real_files / target, weights_only=True)
    if damage == "dropped":
        del ckpt[key]
    else:
        ckpt[key] = WRONG[damage]()
    bad = tmp_path / f"bad_{target}"
    torch.save(ckpt, bad)
    err = _refused(capsys, target, bad, tmp_path)
    assert f"'{key}'" in err, err
    assert os.listdir(tmp_path) == [bad.name]  # nothing written


@pytest.mark.parametrize("target", list(TARGETS))
def test_files_that_are_not_checkpoints_are_one_line(real_files, tmp_path, capsys, target):
    import zipfile

    bad = tmp_path / f"bad_{target}"
    torch.save([torch.ones(3), 1], bad)  # a torch file holding a bare list
    assert "not written by this project" in _refused(capsys, target, bad, tmp_path)
    with zipfile.ZipFile(bad, "w") as z:  # a zip that is not a torch file
        z.writestr("hello.txt", "hello")
    assert "not a readable checkpoint" in _refused(capsys, target, bad, tmp_path)
    bad.write_bytes(b"")
    assert "not a readable checkpoint" in _refused(capsys, target, bad, tmp_path)
    raw = (real_files / target).read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    assert "not a readable checkpoint" in _refused(capsys, target, bad, tmp_path)


def test_running_sums_of_the_wrong_size_are_refused(real_files, tmp_path, capsys):
    ckpt = torch.load(real_files / "gan.ckpt", weights_only=True)
    ckpt.update(epoch=0, step=1, partial=torch.zeros(3))
    bad = tmp_path / "bad_gan.ckpt"
    atomic_save(ckpt, bad)  # a well-formed file (its checksum fits) with the wrong sums
    assert "running sums, it holds 3" in _refused(capsys, "gan.ckpt", bad, tmp_path)


def _folder(path, *files):
    from utils.rundir import RunFolder

    os.makedirs(path, exist_ok=True)
    for name in files:
        open(os.path.join(path, name), "wb").close()
    return RunFolder(str(path), "baseline", ("cifar10.model",))


def test_resume_auto_starts_fresh_only_where_nothing_finished_would_be_lost(tmp_path):
    from utils.checkpoints import resolve_resume

    assert resolve_resume("auto", False, _folder(tmp_path / "empty")) is None  # a first start
    with_ckpt = _folder(tmp_path / "ckpt", "baseline.ckpt", "cifar10.model")
    assert resolve_resume("auto", False, with_ckpt) == with_ckpt.ckpt
    # checkpoints deleted to save space, finished model kept: a resubmitted job must not
    # train over it unasked
    finished = _folder(tmp_path / "finished", "cifar10.model")
    with pytest.raises(UserError, match="--resume auto: .* no checkpoint .*--overwrite"):
        resolve_resume("auto", False, finished)
    assert resolve_resume("auto", True, finished) is None
    with pytest.raises(UserError, match="holds an earlier run"):
        resolve_resume("no", False, finished)


def test_resume_takes_the_run_folder_for_its_checkpoint(tmp_path):
    from utils.checkpoints import resolve_resume

    run = _folder(tmp_path / "run", "baseline.ckpt")
    other = _folder(tmp_path / "other")
    assert resolve_resume(str(tmp_path / "run"), False, other) == os.path.join(
        str(tmp_path / "run"), "baseline.ckpt")
    with pytest.raises(UserError, match="no checkpoint at .*other.*baseline.ckpt"):
        resolve_resume(str(tmp_path / "other"), False, run)


# ---------------------------------------------------- resuming on the same data, from a whole file

def test_a_resume_continues_on_the_same_data(folder, tmp_path, capsys):
    out = tmp_path / "run"
    stopped_after_one_step(folder, out, capsys)
    other = make_folder(tmp_path / "other", seed=1)  # the same classes and sizes, other images
    code, _, err = train(other, out, capsys, "--epochs", "2", "--resume")
    assert "trained on other data" in last_line(code, err)
    shutil.copytree(folder, tmp_path / "copy")  # the same images elsewhere: fine
    code, _, err = train(tmp_path / "copy", out, capsys, "--epochs", "2", "--resume")
    assert code == 0, err


def test_flipped_bytes_inside_a_checkpoint_are_refused(folder, tmp_path, capsys):
    out = tmp_path / "run"
    stopped_after_one_step(folder, out, capsys)
    path = out / "baseline.ckpt"
    with zipfile.ZipFile(path) as z:  # the largest tensor's bytes, stored uncompressed
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    code, _, err = train(folder, out, capsys, "--epochs", "2", "--resume")
    assert "damaged" in last_line(code, err), err


# written by main at 112777f, when a model file named its family 'arch' and its constructor's
# arguments 'arch_args'
OLD_MODEL = os.path.join(os.path.dirname(__file__), "fixtures", "model_112777f",
                         "discriminator.model")


def test_a_model_file_of_the_earlier_main_loads_and_new_ones_use_the_new_names(tmp_path):
    from utils.checkpoints import load_model, save_model

    model, ckpt = load_model(OLD_MODEL, "discriminator", "train_gan.py")
    assert ckpt["family"] == "ie534" and "arch" not in ckpt and "arch_args" not in ckpt
    assert model.build_args == ckpt["build_args"] and model.build_args["width"] == 8
    old = torch.load(OLD_MODEL, weights_only=True)["model"]
    assert all(torch.equal(v, old[k]) for k, v in model.state_dict().items())
    save_model(str(tmp_path / "new.model"), model, ckpt["settings"], classes=ckpt["classes"])
    raw = torch.load(tmp_path / "new.model", weights_only=True)
    assert raw["family"] == "ie534" and raw["build_args"] == model.build_args
    assert not {"arch", "arch_args"} & set(raw)
