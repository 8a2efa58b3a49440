"""The Adam step guard."""
import pytest
import torch
import torch.nn.functional as F

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
