"""Each lesson as a recipe: every default of train_gan.py (RECIPES) or train_baseline.py
(CLASSIFIER_RECIPES) that the lesson sets, by name.

    python train_gan.py --recipe cs231n-dcgan                 # the lesson's settings
    python train_gan.py --recipe cs231n-dcgan --epochs 20     # any flag still overrides
    python train_baseline.py --recipe udacity-batchnorm --batch_norm off

A recipe replaces the parser's defaults, so a flag given on the command line always wins.
Where each value comes from is said beside it; "ours" marks a choice the lesson does not make.
"""
from dataclasses import dataclass

from losses import LOSSES
from models import default_width


@dataclass(frozen=True)
class Recipe:
    lesson: str  # where it comes from, in words
    defaults: dict  # flag name -> value


# The CS231n GAN notebook (seed 004): 96 noise values uniform in [-1, 1] (sample_noise), Adam
# 1e-3 with betas (0.5, 0.999) (get_optimizer) and no step guard, batch 128, MNIST in [-1, 1]
# without augmentation; the discriminator steps first, then the generator on fresh noise
# (run_a_gan); a short batch is skipped (`if len(x) != batch_size: continue`: drop_last);
# 10 epochs for the vanilla and least-squares GANs, 5 for the DCGAN. Not followed: the
# notebook's data order (docs/lessons.md).
_CS231N = dict(dataset="mnist", acgan="off", optimizer="adam", lr=1e-3, beta1=0.5, beta2=0.999,
               adam_step_cap=0, batch_size=128, latent_dim=96, noise="uniform", gen_train=1,
               d_first="on", augment="none", drop_last="on")

RECIPES = {
    "ie534": Recipe(
        "IE 534 (seed 002): ACGAN + WGAN-GP on CIFAR-10 with the assignment's networks",
        # the assignment's text and code: Adam 1e-4, betas (0, 0.9), its step-overflow guard
        # (1024 -> 1000), the last partial batch dropped, the one-hot class in the first 10 of
        # 100 noise values, the generator stepped first every iteration (`if batch_idx %
        # gen_train == 0`), lambda 10, width 196 for 200 epochs (or 128 for 400), its augmentation
        dict(arch="ie534", loss="wgan-gp", acgan="on", dataset="cifar10", optimizer="adam",
             lr=1e-4, beta1=0.0, beta2=0.9, adam_step_cap=1024, batch_size=128, latent_dim=100,
             noise="normal", gen_train=1, d_first="off", epochs=200, augment="assignment",
             drop_last="on")),
    "cs231n-gan": Recipe(
        "CS231n assignment 3 (seed 004): the fully connected GAN on MNIST",
        dict(arch="mlp", loss="gan", epochs=10, **_CS231N)),
    "cs231n-lsgan": Recipe(
        "CS231n assignment 3 (seed 004): the least-squares GAN (equation 9) on MNIST",
        dict(arch="mlp", loss="lsgan", epochs=10, **_CS231N)),
    "cs231n-dcgan": Recipe(
        "CS231n assignment 3 (seed 004): the DCGAN on MNIST, the InfoGAN generator",
        dict(arch="infogan", loss="gan", epochs=5, **_CS231N)),
    "udacity-dcgan-svhn": Recipe(
        "Udacity's DCGAN lesson (seed 003) on SVHN",
        # the lesson's notebook (DCGAN_Solution): conv_dim 32, z_size 100, batch 128 from a
        # shuffled DataLoader that keeps the last partial batch, plain Adam with Radford et
        # al.'s values, BCE with logits and no label smoothing (real_loss's smooth=False), the
        # discriminator first, num_epochs = 50, no augmentation; no convolution has a bias
        dict(arch="dcgan", width=32, loss="gan", acgan="off", dataset="svhn", optimizer="adam",
             lr=2e-4, beta1=0.5, beta2=0.999, adam_step_cap=0, batch_size=128, latent_dim=100,
             noise="uniform", gen_train=1, d_first="on", epochs=50, augment="none",
             drop_last="off")),
    "wgan-clip": Recipe(
        "WGAN with weight clipping (Arjovsky et al. 2017; seed 002's background)",
        # the paper's Algorithm 1: RMSprop 5e-5, clip 0.01, batch 64, n_critic 5, a DCGAN critic
        # without a sigmoid; ours: CIFAR-10 (the paper's is LSUN bedrooms), 100 epochs, the
        # noise; the step guard is Adam's alone
        dict(arch="dcgan", loss="wgan", clip=0.01, acgan="off", dataset="cifar10",
             optimizer="rmsprop", lr=5e-5, adam_step_cap=0, batch_size=64, latent_dim=100,
             noise="normal", gen_train=5, d_first="on", epochs=100, augment="none",
             drop_last="on")),
    "cnn-gan-modern": Recipe(
        "this project's own, beyond the lessons: the assignment's networks with what a modern "
        "GAN baseline adds (hinge loss, spectral norm, EMA, DiffAugment)",
        # ours: the hinge loss with spectral normalisation (SNGAN: Adam 2e-4, betas (0, 0.9)), an
        # EMA of the generator (0.999, as StudioGAN and StyleGAN2-ADA), DiffAugment (Zhao et al.
        # 2020) instead of the assignment's augmentation, the discriminator first
        dict(arch="ie534", loss="hinge", acgan="on", dataset="cifar10", optimizer="adam",
             lr=2e-4, beta1=0.0, beta2=0.9, adam_step_cap=0, batch_size=128, latent_dim=100,
             noise="normal", gen_train=1, d_first="on", epochs=200, augment="none",
             drop_last="on", spectral_norm="on", ema=0.999,
             diffaugment="color,translation,cutout")),
}


# The classifiers of train_baseline.py, by lesson.
CLASSIFIER_RECIPES = {
    "ie534": Recipe(
        "IE 534 (seed 002), Part 1 without the generator: the discriminator as a CIFAR-10 "
        "classifier",
        # the assignment's code: Adam 1e-4 with its step guard, batch 128 (the last partial
        # batch dropped), 100 epochs, lr / 10 at epoch 50 and / 100 at 75, its augmentation
        dict(arch="ie534", dataset="cifar10", optimizer="adam", lr=1e-4, adam_step_cap=1024,
             batch_size=128, epochs=100, schedule="assignment", augment="assignment",
             shuffle="on", drop_last="on", batch_norm="off", eval_bn="eval")),
    "udacity-batchnorm": Recipe(
        "Udacity's batch-normalization lesson (seed 003): the same MLP on MNIST with and "
        "without BatchNorm (--batch_norm on|off)",
        # the lesson's notebook (Batch_Normalization): 784-512-256-10, BatchNorm between each
        # hidden layer and its ReLU (no bias there), SGD 0.01 without momentum or schedule,
        # batch 64 from a DataLoader that neither shuffles nor drops the last batch, 10 epochs,
        # no augmentation (pixels in [-1, 1] here, [0, 1] there), tested in eval mode, and the
        # lesson's point: what testing in training mode would give instead (eval_bn)
        dict(arch="udacity-mlp", dataset="mnist", optimizer="sgd", lr=0.01, adam_step_cap=0,
             batch_size=64, epochs=10, schedule="none", augment="none", shuffle="off",
             drop_last="off", batch_norm="on", eval_bn="both")),
}


def resolve_loss_defaults(values):
    """The settings left to the loss family (the penalty for wgan-gp, clipping for wgan) where
    no flag or recipe set them: the dict of values, resolved."""
    values = dict(values)
    for key in ("gp_weight", "clip"):
        if values.get(key) is None:
            values[key] = getattr(LOSSES[values["loss"]], key)
    return values


def recipe_values(name, **overrides):
    """A recipe's settings as a flat dict, without a command line (bench.py, the tests): the
    assignment's values, then the recipe's, then the overrides, then what the families decide."""
    values = dict(RECIPES["ie534"].defaults, seed=0, width=None, gp_weight=None, clip=None)
    values.update(RECIPES[name].defaults, recipe=name)
    values.update(overrides)
    values = resolve_loss_defaults(values)
    if values["width"] is None:
        values["width"] = default_width(values["arch"])
    return values
