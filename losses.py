"""GAN losses as plain functions of the discriminator's raw scores (`fc1`, no sigmoid), (B,).
A family (LOSSES) pairs a discriminator loss of (real, fake) scores with a generator loss of
fake scores; the regularisers (gradient penalty, weight clipping) and ACGAN's class term are
separate, so any family can take them.

    wgan-gp         Gulrajani et al. 2017: the Wasserstein losses, with the gradient penalty
    wgan            Arjovsky et al. 2017: the same losses, with the critic's weights clipped
    gan             Goodfellow et al. 2014; the generator's non-saturating form (seed 004)
    gan-saturating  the minimax game as written (its gradient vanishes when D is confident)
    lsgan           Mao et al. 2017, equation 9 (seed 004)
    hinge           Lim & Ye 2017, Miyato et al. 2018 (SNGAN, BigGAN)
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def wgan_critic_loss(real_scores, fake_scores):
    """The critic wants real scores high and fake scores low: E[D(fake)] - E[D(real)]."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores):
    """The generator wants its fakes scored high: -E[D(fake)]."""
    return -fake_scores.mean()


def bce_discriminator_loss(real_scores, fake_scores, real_label=1.0):
    """-E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))], computed stably on logits;
    real_label < 1 smooths the real images' target (Udacity's lesson: 0.9)."""
    real = real_label * F.softplus(-real_scores) + (1 - real_label) * F.softplus(real_scores)
    return real.mean() + F.softplus(fake_scores).mean()


def nonsaturating_generator_loss(fake_scores):
    """-E[log sigmoid(D(G(z)))]: binary cross-entropy of the fakes against the label 'real'."""
    return F.softplus(-fake_scores).mean()


def saturating_generator_loss(fake_scores):
    """E[log(1 - sigmoid(D(G(z))))], the minimax generator loss: -softplus(D(G(z)))."""
    return -F.softplus(fake_scores).mean()


def lsgan_discriminator_loss(real_scores, fake_scores, real_label=1.0):
    """1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2] (Mao et al., equation 9); real_label < 1 moves
    the real images' target there."""
    return 0.5 * ((real_scores - real_label) ** 2).mean() + 0.5 * (fake_scores ** 2).mean()


def lsgan_generator_loss(fake_scores):
    """1/2 E[(D(G(z)) - 1)^2]."""
    return 0.5 * ((fake_scores - 1) ** 2).mean()


def hinge_discriminator_loss(real_scores, fake_scores):
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


@dataclass(frozen=True)
class Loss:
    """One family: its two losses and the regularisers it comes with unless a flag says
    otherwise (train_gan.py --gp_weight, --clip)."""
    discriminator: Callable
    generator: Callable
    gp_weight: float = 0.0  # the gradient penalty's lambda
    clip: float = 0.0  # the critic's weights clipped to [-clip, clip]
    labelled: bool = False  # the real images have a target label (one that can be smoothed)


LOSSES = {
    "wgan-gp": Loss(wgan_critic_loss, wgan_generator_loss, gp_weight=10.0),
    "wgan": Loss(wgan_critic_loss, wgan_generator_loss, clip=0.01),
    "gan": Loss(bce_discriminator_loss, nonsaturating_generator_loss, labelled=True),
    "gan-saturating": Loss(bce_discriminator_loss, saturating_generator_loss, labelled=True),
    "lsgan": Loss(lsgan_discriminator_loss, lsgan_generator_loss, labelled=True),
    "hinge": Loss(hinge_discriminator_loss, wgan_generator_loss),
}


def auxiliary_class_loss(logits, labels):
    """ACGAN's auxiliary classifier term: cross-entropy of fc10 on the (real or intended) class."""
    return F.cross_entropy(logits, labels)


def interpolate(real, fake, alpha):
    """Points on the lines between real and fake images; alpha (B,) in [0, 1]."""
    a = alpha.view(-1, *([1] * (real.dim() - 1)))  # (B,) -> (B, 1, 1, 1)
    return a * real.detach() + (1 - a) * fake.detach()


def gradient_penalty(critic, real, fake, alpha, weight=10.0):
    """WGAN-GP: weight * mean over samples of (||d critic(x_hat) / d x_hat||_2 - 1)^2, x_hat the
    interpolates at alpha; the graph is kept so that the penalty trains the critic's weights."""
    x_hat = interpolate(real, fake, alpha).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B, C, H, W) -> (B,)
    return weight * ((norms - 1) ** 2).mean()


@torch.no_grad()
def clip_weights(module, clip):
    """WGAN's Lipschitz constraint: every weight of the critic clamped to [-clip, clip]."""
    for p in module.parameters():
        p.clamp_(-clip, clip)


# ----------------------------------------------------------------------------- SimCLR

def nt_xent(z_left, z_right, temperature=0.5):
    """SimCLR's NT-Xent loss (seed 004): rows k of z_left and z_right (N, D) are a positive pair.
    It is the mean over the 2N examples of a cross-entropy over their row of the similarity
    matrix, the diagonal left out: the log-sum-exp keeps small temperatures finite."""
    n = len(z_left)
    z = F.normalize(torch.cat([z_left, z_right]).float(), dim=1)  # (2N, D), unit rows
    logits = z @ z.T / temperature  # (2N, 2N) cosine similarities / t
    logits.fill_diagonal_(float("-inf"))  # k is not its own negative
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)  # mean over the 2N rows
