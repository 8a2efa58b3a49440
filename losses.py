"""GAN losses as plain functions of scores, apart from the networks.

Scores are the critic's raw outputs (`fc1`, no sigmoid), shape (B,). Other GAN families
(non-saturating, least squares, WGAN with clipping) slot in here beside these.
"""
import torch
import torch.nn.functional as F


def wgan_critic_loss(real_scores, fake_scores):
    """The critic wants real scores high and fake scores low: E[D(fake)] - E[D(real)]."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores):
    """The generator wants its fakes scored high: -E[D(fake)]."""
    return -fake_scores.mean()


def auxiliary_class_loss(logits, labels):
    """ACGAN's auxiliary classifier term: cross-entropy of fc10 on the (real or intended) class."""
    return F.cross_entropy(logits, labels)


def interpolate(real, fake, alpha):
    """Points on the lines between real and fake images; alpha (B,) in [0, 1]."""
    a = alpha.view(-1, *([1] * (real.dim() - 1)))  # (B,) -> (B, 1, 1, 1)
    return a * real.detach() + (1 - a) * fake.detach()


def gradient_penalty(critic, real, fake, alpha, weight=10.0):
    """WGAN-GP: weight * mean over samples of (||d critic(x_hat) / d x_hat||_2 - 1)^2.

    critic maps images (B, C, H, W) to scores (B,); x_hat are the interpolates of real and fake
    at alpha. The graph is kept (create_graph) so the penalty trains the critic's weights.
    """
    x_hat = interpolate(real, fake, alpha).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B, C, H, W) -> (B,)
    return weight * ((norms - 1) ** 2).mean()
