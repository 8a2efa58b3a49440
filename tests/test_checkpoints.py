"""Atomic checkpoints and the checks on every file loaded."""
import os
import pickle

import pytest
import torch

from checkpoints import atomic_save, load_checkpoint
from cli import UserError


def test_atomic_save_keeps_the_last_good_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "a.ckpt")
    atomic_save({"kind": "x", "v": 1}, path)

    def crash(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        atomic_save({"kind": "x", "v": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["v"] == 1
    assert os.listdir(tmp_path) == ["a.ckpt"]  # no temporary file left behind


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_checkpoint_refuses_bad_files(tmp_path):
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
    torch.save([1, 2], str(tmp_path / "list.ckpt"))
    with pytest.raises(UserError, match="not written by this project"):
        load_checkpoint(str(tmp_path / "list.ckpt"))
    with pytest.raises(UserError, match="'baseline' checkpoint, not 'gan'"):
        load_checkpoint(good, kind="gan")
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
