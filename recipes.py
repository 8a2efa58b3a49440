"""Each lesson as a recipe: every default of train_gan.py (RECIPES) or train_baseline.py
(CLASSIFIER_RECIPES) that the lesson sets, by name.

    python train_gan.py --recipe cs231n-dcgan                 # the lesson's settings
    python train_gan.py --recipe cs231n-dcgan --epochs 20     # any flag still overrides
    python train_baseline.py --recipe udacity-batchnorm --batch_norm off

A recipe replaces the parser's defaults, so a flag given on the command line always wins, and
the resolved settings are what the run saves. Where each value comes from is said beside it;
"ours" marks a choice the lesson does not make.
"""
from dataclasses import dataclass

from losses import LOSSES
from models import default_width


@dataclass(frozen=True)
class Recipe:
    lesson: str  # where it comes from, in words
    defaults: dict  # flag name -> value


# The CS231n GAN notebook (seed 004 and the notebook's code): noise of 96 values uniform in
# [-1, 1] (sample_noise), Adam with lr 1e-3 and betas (0.5, 0.999) (get_optimizer), plain Adam
# (no step guard), batch 128, images scaled to [-1, 1] with no augmentation, MNIST; in each
# iteration the discriminator steps first, then the generator on fresh noise (run_a_gan); a
# batch smaller than 128 is skipped (`if len(x) != batch_size: continue`), as drop_last does.
# 10 epochs for the vanilla and least-squares GANs, 5 for the DCGAN. Not followed: the notebook
# reads the first 50,000 training images in the same order every epoch (its ChunkSampler
# leaves the rest for validation); the recipes shuffle all 60,000 each epoch.
_CS231N = dict(dataset="mnist", acgan="off", optimizer="adam", lr=1e-3, beta1=0.5, beta2=0.999,
               adam_step_cap=0, batch_size=128, latent_dim=96, noise="uniform", gen_train=1,
               d_first="on", augment="none", drop_last="on")

RECIPES = {
    "ie534": Recipe(
        "IE 534 (seed 002): ACGAN + WGAN-GP on CIFAR-10 with the assignment's networks",
        # the assignment's text and code: Adam 1e-4, betas (0, 0.9), with its step-overflow
        # guard (1024 -> 1000), batch 128 (the last partial batch dropped), 100 noise values
        # whose first 10 are the one-hot class, the generator trained every iteration and
        # before the critic (`if batch_idx % gen_train == 0`, then the discriminator), lambda
        # 10, width 196 for 200 epochs (or width 128 for 400), its training augmentation
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
        # the lesson's notebook (DCGAN_Solution): conv_dim 32, z_size 100 uniform in [-1, 1],
        # batch 128 from a shuffled DataLoader that keeps the last partial batch (73,257 =
        # 572 x 128 + 41), Adam lr 0.0002 with betas (0.5, 0.999) (Radford et al.'s values),
        # plain Adam, BCE with logits and no label smoothing (real_loss's smooth=False), the
        # discriminator trained first, then the generator on fresh noise, num_epochs = 50,
        # images scaled to [-1, 1] with no augmentation; the networks' convolutions have no
        # bias (the lesson's conv/deconv helpers, models.py's dcgan family)
        dict(arch="dcgan", width=32, loss="gan", acgan="off", dataset="svhn",
             optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, adam_step_cap=0,
             batch_size=128, latent_dim=100, noise="uniform", gen_train=1, d_first="on",
             epochs=50, augment="none", drop_last="off")),
    "wgan-clip": Recipe(
        "WGAN with weight clipping (Arjovsky et al. 2017; seed 002's background)",
        # the paper's Algorithm 1: RMSprop with lr 5e-5, clip 0.01, batch 64, n_critic 5
        # critic steps before each generator step, a DCGAN critic without a sigmoid; CIFAR-10,
        # 100 epochs and normal noise of 100 values are ours (the paper trains on LSUN
        # bedrooms); the step guard is Adam's and does not apply to RMSprop
        dict(arch="dcgan", loss="wgan", clip=0.01, acgan="off", dataset="cifar10",
             optimizer="rmsprop", lr=5e-5, adam_step_cap=0, batch_size=64, latent_dim=100,
             noise="normal", gen_train=5, d_first="on", epochs=100, augment="none",
             drop_last="on")),
    "cnn-gan-modern": Recipe(
        "this project's own, beyond the lessons: the assignment's networks with what a modern "
        "GAN baseline adds (hinge loss, spectral norm, EMA, DiffAugment)",
        # ours: the hinge loss with spectral normalisation (Miyato et al. 2018, SNGAN: Adam
        # 2e-4, betas (0, 0.9)), an EMA of the generator (beta 0.999, as StudioGAN and
        # StyleGAN2-ADA), DiffAugment's three transforms instead of the assignment's
        # augmentation (Zhao et al. 2020), ACGAN's class term, the discriminator first
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
        # the lesson's notebook (Batch_Normalization): 784-512-256-10 with ReLU, BatchNorm
        # between each hidden layer and its ReLU and no bias there, cross-entropy, SGD with
        # lr 0.01 (no momentum, no schedule), batch 64 from a DataLoader that neither shuffles
        # nor drops the last batch (60,000 = 937 x 64 + 32), 10 epochs, ToTensor only (no
        # augmentation; pixels are scaled to [-1, 1] here, [0, 1] there), tested in eval mode,
        # and the lesson's point: what testing in training mode would give instead (eval_bn)
        dict(arch="udacity-mlp", dataset="mnist", optimizer="sgd", lr=0.01, adam_step_cap=0,
             batch_size=64, epochs=10, schedule="none", augment="none", shuffle="off",
             drop_last="off", batch_norm="on", eval_bn="both")),
}


def resolve_loss_defaults(values):
    """The settings left to the loss family (the penalty for wgan-gp, clipping for wgan) where
    no flag or recipe set them: the dict of values, resolved."""
    values = dict(values)
    if values.get("gp_weight") is None:
        values["gp_weight"] = LOSSES[values["loss"]].gp_weight
    if values.get("clip") is None:
        values["clip"] = LOSSES[values["loss"]].clip
    return values


def recipe_values(name, **overrides):
    """A recipe's settings as a flat dict, without a command line: the assignment's values,
    then the recipe's, then the overrides, then what the loss and network families decide.
    Settings.resolve(recipe_values(...)) is what the GAN steps read, for bench.py and the
    tests."""
    values = dict(RECIPES["ie534"].defaults, seed=0, width=None, gp_weight=None, clip=None)
    values.update(RECIPES[name].defaults, recipe=name)
    values.update(overrides)
    values = resolve_loss_defaults(values)
    if values["width"] is None:
        values["width"] = default_width(values["arch"])
    return values
