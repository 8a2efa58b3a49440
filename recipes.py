"""Each lesson's GAN as a recipe: every default of train_gan.py that the lesson sets, by name.

    python train_gan.py --recipe cs231n-dcgan                 # the lesson's settings
    python train_gan.py --recipe cs231n-dcgan --epochs 20     # any flag still overrides

A recipe replaces the parser's defaults, so a flag given on the command line always wins, and
the resolved settings are what the run saves. Where each value comes from is said beside it;
"ours" marks a choice the lesson does not make.
"""
from dataclasses import dataclass
from types import SimpleNamespace

from losses import LOSSES
from models import default_width


@dataclass(frozen=True)
class Recipe:
    lesson: str  # where it comes from, in words
    defaults: dict  # flag name -> value


# The CS231n GAN notebook (seed 004): noise of 96 values uniform in [-1, 1], Adam with lr 1e-3
# and betas (0.5, 0.999), batch 128, no augmentation, MNIST; 10 epochs for the vanilla and
# least-squares GANs, 5 for the DCGAN.
_CS231N = dict(dataset="mnist", acgan="off", optimizer="adam", lr=1e-3, beta1=0.5, beta2=0.999,
               batch_size=128, latent_dim=96, noise="uniform", gen_train=1, augment="none")

RECIPES = {
    "ie534": Recipe(
        "IE 534 (seed 002): ACGAN + WGAN-GP on CIFAR-10 with the assignment's networks",
        # the assignment's text: Adam 1e-4, betas (0, 0.9), batch 128, 100 noise values whose
        # first 10 are the one-hot class, the generator trained every iteration, lambda 10,
        # width 196 for 200 epochs (or width 128 for 400), its training augmentation
        dict(arch="ie534", loss="wgan-gp", acgan="on", dataset="cifar10", optimizer="adam",
             lr=1e-4, beta1=0.0, beta2=0.9, batch_size=128, latent_dim=100, noise="normal",
             gen_train=1, epochs=200, augment="assignment")),
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
        # the lesson's code: conv_dim 32, z of 100 uniform in [-1, 1], batch 128, Adam 2e-4 with
        # betas (0.5, 0.999) (Radford et al.'s values), binary cross-entropy, 30 epochs
        dict(arch="dcgan", width=32, loss="gan", acgan="off", dataset="svhn",
             optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, batch_size=128,
             latent_dim=100, noise="uniform", gen_train=1, epochs=30, augment="none")),
    "wgan-clip": Recipe(
        "WGAN with weight clipping (Arjovsky et al. 2017; seed 002's background)",
        # the paper's Algorithm 1: RMSprop with lr 5e-5, clip 0.01, batch 64, 5 critic steps
        # per generator step, a DCGAN critic without a sigmoid; CIFAR-10, 100 epochs and
        # normal noise of 100 values are ours (the paper trains on LSUN bedrooms)
        dict(arch="dcgan", loss="wgan", clip=0.01, acgan="off", dataset="cifar10",
             optimizer="rmsprop", lr=5e-5, batch_size=64, latent_dim=100, noise="normal",
             gen_train=5, epochs=100, augment="none")),
}


def resolve_loss_defaults(args):
    """The settings left to the loss family (the penalty for wgan-gp, clipping for wgan) where
    no flag or recipe set them; args is changed and returned."""
    if args.gp_weight is None:
        args.gp_weight = LOSSES[args.loss].gp_weight
    if args.clip is None:
        args.clip = LOSSES[args.loss].clip
    return args


def recipe_args(name, **overrides):
    """A recipe's settings as the namespace the GAN steps read (utils.gan: GanSpec, build_gan),
    without a command line: the assignment's values, then the recipe's, then the overrides,
    then what the loss and network families decide. For bench.py and the tests."""
    values = dict(RECIPES["ie534"].defaults, seed=0, width=None, gp_weight=None, clip=None,
                  adam_step_cap=1024)
    values.update(RECIPES[name].defaults, recipe=name)
    values.update(overrides)
    args = resolve_loss_defaults(SimpleNamespace(**values))
    if args.width is None:
        args.width = default_width(args.arch)
    return args
