import os
import pickle

import pytest
import torch
import torch.nn.functional as F

import utils
from utils import (ArgumentParser, UserError, adam_step_guard, atomic_save, load_checkpoint,
                   save_grid)


@pytest.mark.parametrize("impl", ["foreach", "fused", "single"])
def test_adam_guard_fires_and_training_continues(impl):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    kw = {"foreach": dict(foreach=True), "fused": dict(fused=True),
          "single": dict(foreach=False)}[impl]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.9), **kw)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    losses, steps = [], []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        adam_step_guard(opt, cap=16, reset=10)
        losses.append(loss.item())
        steps.append(float(opt.state[model.weight]["step"]))
    assert max(steps) < 16 and steps[15] == 10  # it fired and kept the count bounded
    for state in opt.state.values():
        assert torch.is_tensor(state["step"])
        assert torch.isfinite(state["exp_avg"]).all() and torch.isfinite(state["exp_avg_sq"]).all()
    assert losses[-1] < losses[16] - 0.02 < losses[0]  # still learning after it fired


def test_adam_guard_assignment_values_and_state_dict_round_trip():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    for s in opt.state.values():
        s["step"].fill_(1024)
    adam_step_guard(opt)  # the assignment: 1024 -> 1000
    assert all(float(s["step"]) == 1000 for s in opt.state.values())
    adam_step_guard(opt)
    assert all(float(s["step"]) == 1000 for s in opt.state.values())  # below the cap: unchanged
    opt2 = torch.optim.Adam(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    opt2.step()
    assert all(float(s["step"]) == 1001 for s in opt2.state.values())
    for s in opt2.state.values():
        s["step"].fill_(5000)
    adam_step_guard(opt2, cap=0)  # 0 turns it off
    assert all(float(s["step"]) == 5000 for s in opt2.state.values())


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


def test_parser_accepts_dashes_and_errors_in_one_line(capsys):
    p = ArgumentParser(prog="x")
    utils.add_shared_flags(p, epochs=3, lr=0.1, batch_size=4)
    a = p.parse_args(["--data-dir", "d", "--batch_size=7", "--out-dir=o"])
    assert (a.data_dir, a.batch_size, a.out_dir) == ("d", 7, "o")
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--epochs", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err
    assert "--data-dir" not in p.format_help()  # help lists the snake_case spelling only


def test_save_grid_writes_a_png(tmp_path):
    path = str(tmp_path / "g.png")
    save_grid(torch.rand(20, 3, 32, 32), path, nrow=10)
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 1.8 * h  # 10 columns, 2 rows
