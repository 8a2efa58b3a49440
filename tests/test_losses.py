"""Every loss family on small cases computed by hand."""
import math

import pytest
import torch

from losses import LOSSES, clip_weights

REAL = torch.tensor([0.0, math.log(3.0)])  # sigmoid: 0.5 and 0.75
FAKE = torch.tensor([0.0, -math.log(3.0)])  # sigmoid: 0.5 and 0.25


def test_wasserstein_losses():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -1.5])
    for name in ("wgan-gp", "wgan"):
        assert LOSSES[name].discriminator(real, fake).item() == pytest.approx(-0.5 - 2.0)
        assert LOSSES[name].generator(fake).item() == pytest.approx(0.5)


def test_binary_cross_entropy_gan():
    # D: -mean(log sigmoid(real)) - mean(log(1 - sigmoid(fake)))
    d = -(math.log(0.5) + math.log(0.75)) / 2 - (math.log(0.5) + math.log(0.75)) / 2
    assert LOSSES["gan"].discriminator(REAL, FAKE).item() == pytest.approx(d)
    # non-saturating G: -mean(log sigmoid(fake)) = -(log 0.5 + log 0.25) / 2
    g = -(math.log(0.5) + math.log(0.25)) / 2
    assert LOSSES["gan"].generator(FAKE).item() == pytest.approx(g)
    # saturating G: mean(log(1 - sigmoid(fake))) = (log 0.5 + log 0.75) / 2
    s = (math.log(0.5) + math.log(0.75)) / 2
    assert LOSSES["gan-saturating"].generator(FAKE).item() == pytest.approx(s)
    assert LOSSES["gan-saturating"].discriminator is LOSSES["gan"].discriminator


def test_gan_losses_are_stable_at_large_logits():
    big = torch.tensor([200.0, -200.0])
    for name in ("gan", "gan-saturating"):
        assert torch.isfinite(LOSSES[name].discriminator(big, -big))
        assert torch.isfinite(LOSSES[name].generator(big))
    # a confident, right discriminator has a loss near 0, a wrong one near 200
    assert LOSSES["gan"].discriminator(torch.tensor([200.0]), torch.tensor([-200.0])) < 1e-6
    assert LOSSES["gan"].generator(torch.tensor([-200.0])).item() == pytest.approx(200.0)


def test_the_saturating_generator_loss_vanishes_where_the_other_does_not():
    """When D is sure a fake is fake, minimax's gradient vanishes and the non-saturating one
    does not: the reason seed 004 gives for the non-saturating form."""
    grads = {}
    for name in ("gan", "gan-saturating"):
        fake = torch.tensor([-10.0], requires_grad=True)
        LOSSES[name].generator(fake).backward()
        grads[name] = fake.grad.abs().item()
    assert grads["gan-saturating"] < 1e-4 < 0.99 < grads["gan"]


def test_least_squares_gan_equation_9():
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # 1/2 mean((D(x) - 1)^2) + 1/2 mean(D(G(z))^2) = 1/2 * 1/2 + 1/2 * 2
    assert LOSSES["lsgan"].discriminator(real, fake).item() == pytest.approx(0.25 + 1.0)
    # 1/2 mean((D(G(z)) - 1)^2) = 1/2 * (1 + 1) / 2
    assert LOSSES["lsgan"].generator(fake).item() == pytest.approx(0.5)


def test_hinge():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5)/2 + (0 + 1.5)/2
    assert LOSSES["hinge"].discriminator(real, fake).item() == pytest.approx(0.25 + 0.75)
    assert LOSSES["hinge"].generator(fake).item() == pytest.approx(0.75)


def test_weight_clipping():
    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-0.5, 0.005, 0.02, -0.003]] * 3))
        lin.bias.copy_(torch.tensor([1.0, -1.0, 0.001]))
    clip_weights(lin, 0.01)
    assert torch.equal(lin.weight[0], torch.tensor([-0.01, 0.005, 0.01, -0.003]))
    assert torch.equal(lin.bias, torch.tensor([0.01, -0.01, 0.001]))
