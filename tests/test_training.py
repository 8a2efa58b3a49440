"""The epoch loop's machinery (utils/training.py, utils/trainer.py): the Adam step guard, the
evaluation (in training mode too, and per class), a batch of one through BatchNorm, a finished
run resumed, and a signal while starting."""
import json
import os
import signal

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import TINY_DIGITS, last_line, one_line, run_cli, train

import train_baseline
import train_gan
from models import discriminator
from utils import data as data_module
from utils.data import Batches
from utils.training import adam_step_guard


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


def test_the_guard_makes_late_updates_about_0_8_of_standard_adams():
    """With beta2 = 0.999 (the baseline) a step count pinned near 1000 freezes Adam's bias
    correction at sqrt(1 - 0.999^1000) ~ 0.8: every later update is about 0.8 times standard
    Adam's (whose correction tends to 1). What the README says; --adam_step_cap 0 is standard."""
    torch.manual_seed(0)
    updates = {}
    for step in (1000, 100000):  # where the guard keeps it, and where standard Adam would be
        p = torch.nn.Parameter(torch.zeros(50))
        opt = torch.optim.Adam([p], lr=1e-3)
        p.grad = torch.ones(50)
        opt.step()  # creates the state
        opt.state[p].update(step=torch.tensor(float(step)), exp_avg=torch.full((50,), 0.5),
                            exp_avg_sq=torch.full((50,), 0.25))
        before = p.detach().clone()
        p.grad = torch.full((50,), 0.5)
        opt.step()
        updates[step] = (p.detach() - before).abs().mean().item()
    assert 0.79 < updates[1000] / updates[100000] < 0.81


# ----------------------------------------------------------------------------- evaluation

def test_evaluating_in_training_mode_uses_each_batchs_statistics_and_changes_nothing():
    torch.manual_seed(0)
    model = discriminator("udacity-mlp", 32, 10, 1, 28, batch_norm=True)
    for _ in range(3):  # running statistics away from their start
        model.train()(torch.randn(64, 1, 28, 28) * 2 + 1)
    model.eval()
    x = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (96,))
    batches = Batches(x, y, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from utils.training import evaluate

    acc_eval, _ = evaluate(model, batches)
    acc_train, loss_train = evaluate(model, batches, batch_statistics=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    import copy

    twin = copy.deepcopy(model).train()
    with torch.no_grad():
        logits = torch.cat([twin(xb)[1] for xb, _ in batches.epoch(0)])
    assert acc_train == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())
    assert loss_train == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc_eval != acc_train or evaluate(model, batches)[1] != loss_train
    # a last batch of one image is left out in training mode (BatchNorm needs two)
    one_over = Batches(x[:65], y[:65], 32).rebatched(32, 2)
    assert len(one_over) == 2 and len(Batches(x[:65], y[:65], 32)) == 3
    evaluate(model, one_over, batch_statistics=True)


def test_per_class_accuracy_counts_each_class_apart():
    class Fixed(nn.Module):
        num_classes = 3

        def forward(self, x):  # the prediction is the image's first pixel (0, 1 or 2)
            pred = ((x[:, 0, 0, 0] + 1) * 127.5).round().long()
            return x[:, 0, 0, 0], nn.functional.one_hot(pred, 3).float()

    preds = torch.tensor([0, 1, 1, 2, 0, 2, 1])
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    x = preds.to(torch.uint8)[:, None, None, None].expand(7, 1, 2, 2).contiguous()
    from utils.training import evaluate

    acc, _, by_class = evaluate(Fixed(), Batches(x, labels, 3), per_class=True)
    assert acc == pytest.approx(500 / 7)
    assert by_class == [50.0, 100.0, 66.67]
    _, _, by_class = evaluate(Fixed(), Batches(x[:4], labels[:4], 3), per_class=True)
    assert by_class[2] == 100.0 and by_class[0] == 50.0


# --------------------------------------------------------------- a batch of one (utils/trainer.py)

@pytest.mark.parametrize("script,argv", [
    (train_gan, ["--batch_size", "1", "--subset", "8"]),  # the generator's BatchNorm
    (train_baseline, ["--arch", "udacity-mlp", "--batch_norm", "on", "--batch_size", "1",
                      "--subset", "8"]),
])
def test_a_batch_of_one_through_batchnorm(script, argv, tmp_path, capsys):
    err = one_line(*run_cli(script.main, TINY_DIGITS + argv + ["--out_dir",
                                                               str(tmp_path / "r")], capsys)[::2])
    assert "BatchNorm" in err and "--batch_size" in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_batch_of_one_without_batchnorm_trains(tmp_path, capsys):
    code, _, err = run_cli(train_baseline.main, TINY_DIGITS + ["--batch_size", "1", "--subset",
                                                               "4", "--out_dir", str(tmp_path)],
                           capsys)
    assert code == 0, err  # ie534's LayerNorm normalises each image alone


# -------------------------------------------------------------------------- starting and finishing

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
    assert "received SIGTERM while starting" in last_line(code, err, 75)
    assert not os.path.exists(tmp_path / "run")


def test_the_resumption_line_says_how_the_run_changed():
    """Run.resuming's words for a longer or a shorter run and a changed speed flag."""
    from types import SimpleNamespace

    from utils.training import Run

    def said(saved, now, done=1):
        settings = SimpleNamespace(loop=SimpleNamespace(epochs=now["epochs"]),
                                   flat=lambda: now)
        run = SimpleNamespace(settings=settings, resume_from="r.ckpt",
                              ckpt={"epoch": done, "step": 4, "settings": saved})
        return Run.resuming(run)

    base = {"epochs": 30, "amp": "auto"}
    assert said(base, base) == "resuming r.ckpt at epoch 2, step 4"
    assert "ending sooner: --epochs 30 -> 3" in said(base, {**base, "epochs": 3})
    assert "training longer: --epochs 30 -> 40" in said(base, {**base, "epochs": 40})
    line = said(base, {**base, "amp": "off"})
    assert "--amp auto -> off: allowed" in line and "bit for bit" in line
    assert "is finished (30 of 30 epochs)" in said(base, base, done=30)
