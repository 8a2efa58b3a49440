"""Every loss family on small cases computed by hand."""
import math
import os

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


def test_label_smoothing_moves_only_the_real_images_target():
    """--real_label 0.9 (Udacity's real_loss(smooth=True)): binary cross-entropy of the real
    scores against 0.9, the fakes' term unchanged; LSGAN's real target 0.9; 1 is the plain
    loss."""
    import torch.nn.functional as F

    from utils.gan import GanSpec

    bce = F.binary_cross_entropy_with_logits
    d = LOSSES["gan"].discriminator(REAL, FAKE, real_label=0.9)
    by_hand = bce(REAL, torch.full_like(REAL, 0.9)) + bce(FAKE, torch.zeros_like(FAKE))
    assert d.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # -0.9 log 0.75 - 0.1 log 0.25 for the second real image: smoothing costs a confident one
    assert d.item() > LOSSES["gan"].discriminator(REAL, FAKE).item() - 0.02
    ls = LOSSES["lsgan"].discriminator(REAL, FAKE, real_label=0.9)
    assert ls.item() == pytest.approx(0.5 * ((REAL - 0.9) ** 2).mean().item()
                                      + 0.5 * (FAKE ** 2).mean().item())
    for name in ("gan", "gan-saturating", "lsgan"):
        assert LOSSES[name].labelled
        plain = GanSpec(loss=name, gp_weight=0.0).critic_loss(REAL, FAKE)
        assert plain.item() == LOSSES[name].discriminator(REAL, FAKE).item()
        smooth = GanSpec(loss=name, gp_weight=0.0, real_label=0.9).critic_loss(REAL, FAKE)
        assert smooth.item() != plain.item()
    assert not any(LOSSES[name].labelled for name in ("wgan-gp", "wgan", "hinge"))


def test_label_smoothing_is_refused_where_there_is_no_label(tmp_path, capsys):
    from conftest import run_cli

    import train_gan

    for argv, words in ((["--real_label", "0.9"], "wgan-gp loss has no labels"),
                        (["--loss", "hinge", "--real_label", "0.9"], "hinge loss"),
                        (["--recipe", "cs231n-gan", "--real_label", "0"], "(0, 1]")):
        code, _, err = run_cli(train_gan.main, ["--dataset", "digits", "--out_dir",
                                                str(tmp_path), *argv], capsys)
        assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_the_flag_reaches_the_critics_loss():
    import train_gan
    from utils.gan import GanSpec

    spec = GanSpec.of(train_gan.resolve(["--recipe", "cs231n-gan", "--real_label", "0.9"]))
    assert spec.real_label == 0.9
    d = spec.critic_loss(REAL, FAKE)
    assert d.item() == LOSSES["gan"].discriminator(REAL, FAKE, real_label=0.9).item()
    assert GanSpec.of(train_gan.resolve(["--recipe", "cs231n-gan"])).real_label == 1.0
