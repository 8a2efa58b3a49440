"""A GAN's training steps, whatever the networks (the generator's through the frozen
critic, the critic's with its loss family, regularisers and ACGAN's class term), the networks
and optimizers built from the settings, and the grid of fixed noise."""
import copy
from dataclasses import dataclass

import torch

from losses import LOSSES, auxiliary_class_loss, clip_weights, gradient_penalty
from models import ARCHITECTURES, discriminator, generator
from utils.diffaug import DiffAugment, parse_policy
from utils.distributed import Dist
from utils.errors import UserError
from utils.pictures import save_grid, to_unit
from utils.runtime import Runtime, seed_everything
from utils.sampling import sample_noise
from utils.training import descend

PLAIN = Runtime(torch.device("cpu"))  # fp32, eager: the steps' default
# What the discriminator step reports: the assignment's print order, then the loss itself.
D_STATS = ("gp", "d_fake", "d_real", "real_class", "fake_class", "real_acc", "d_loss")
CLASS_STATS = ("real_class", "fake_class", "real_acc")  # only with a class head


@dataclass(frozen=True)
class GanSpec:
    """What a GAN step does, whatever the networks."""
    loss: str = "wgan-gp"
    gp_weight: float = 10.0
    clip: float = 0.0
    gen_train: int = 1
    latent_dim: int = 100
    noise: str = "normal"
    step_cap: int = 1024
    d_first: bool = False  # IE 534 steps the generator first; the other lessons the critic
    ema: float = 0.0  # the generator's exponential moving average: its beta; 0 off
    diffaug: tuple = ()  # DiffAugment's transforms (utils/diffaug.py); () off
    real_label: float = 1.0  # the real images' target; below 1: label smoothing

    @classmethod
    def of(cls, settings):
        """The steps' view of a run's Settings (its gan and optim groups, resolved)."""
        g = settings.gan
        if g.gp_weight is None or g.clip is None:
            raise ValueError("GanSpec.of needs resolved settings (the loss family's gp_weight "
                             "and clip: recipes.resolve_loss_defaults)")
        return cls(g.loss, g.gp_weight, g.clip, g.gen_train, g.latent_dim, g.noise,
                   settings.optim.adam_step_cap, g.d_first == "on", g.ema,
                   parse_policy(g.diffaugment), g.real_label)

    def critic_loss(self, real_scores, fake_scores):
        """The loss family's discriminator loss, the real label smoothed where asked."""
        family = LOSSES[self.loss]
        if self.real_label == 1.0:
            return family.discriminator(real_scores, fake_scores)
        return family.discriminator(real_scores, fake_scores, real_label=self.real_label)

    def trains_generator(self, step):
        """Whether iteration `step` has a generator step: every gen_train-th, the first of each
        group when the generator goes first (IE 534: `batch_idx % gen_train == 0`), the last
        when the critic goes first (WGAN's n_critic critic steps, then the generator)."""
        return (step + int(self.d_first)) % self.gen_train == 0


ASSIGNMENT = GanSpec()  # ACGAN + WGAN-GP as the assignment has it


@dataclass
class GanNets:
    """The two networks and what the steps run them through: G and D plain (saved, evaluated,
    and the penalty's double backward, which torch.compile cannot take); G_train and D_train
    compiled and/or DDP-wrapped; D_frozen for the generator step; G_fake for the fakes."""
    G: torch.nn.Module
    D: torch.nn.Module
    G_train: object = None
    D_train: object = None
    D_frozen: object = None
    G_fake: object = None
    G_ema: torch.nn.Module = None  # the generator's moving average (--ema), or None

    def __post_init__(self):
        for name, default in (("G_train", self.G), ("D_train", self.D), ("D_frozen", self.D),
                              ("G_fake", self.G)):
            if getattr(self, name) is None:
                setattr(self, name, default)


def ema_beta(beta, iteration):
    """--ema's beta at global iteration t, warmed up as TensorFlow's moving average with
    num_updates (min(beta, (1 + t) / (10 + t))): without it a short run's average would still
    be mostly its random initial weights."""
    return min(beta, (1.0 + iteration) / (10.0 + iteration))


@torch.no_grad()
def ema_update(ema, model, beta):
    """ema = beta * ema + (1 - beta) * model for every weight; buffers (BatchNorm's running
    statistics) copied as they are."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - beta)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def generator_step(nets, opt_g, z, labels, spec=ASSIGNMENT, runtime=PLAIN, gen=None,
                   iteration=None):
    """One generator update through a frozen discriminator (its fakes DiffAugmented first
    when spec.diffaug), then the moving average's (warmed up by the global iteration when
    given, else spec.ema itself); returns the loss (a tensor)."""
    nets.D.requires_grad_(False)  # the critic's weights collect no gradient here
    try:
        with runtime.autocast():
            fake = nets.G_train(z)
            if spec.diffaug:
                fake = DiffAugment(spec.diffaug)(fake, gen)
            scores, logits = nets.D_frozen(fake)
        loss = LOSSES[spec.loss].generator(scores.float())
        if logits is not None:
            loss = loss + auxiliary_class_loss(logits.float(), labels)
        descend(opt_g, loss, spec.step_cap)
        if nets.G_ema is not None:
            beta = spec.ema if iteration is None else ema_beta(spec.ema, iteration)
            ema_update(nets.G_ema, nets.G, beta)
    finally:
        nets.D.requires_grad_(True)
    return loss.detach()


def _critic_scores(nets, real, fake):
    """(real scores, fake scores, real logits, fake logits) of the training critic."""
    n = len(real)
    if not nets.D.batch_statistics:
        # Real and fake in one pass: without BatchNorm the samples do not mix, so this
        # equals two passes (LayerNorm is per sample).
        scores, logits = nets.D_train(torch.cat([real, fake]))
        split = (None, None) if logits is None else (logits[:n], logits[n:])
        return scores[:n], scores[n:], *split
    # BatchNorm: real and fake batches are normalised apart, as the lessons do.
    (real_scores, real_logits), (fake_scores, fake_logits) = nets.D_train(real), nets.D_train(fake)
    return real_scores, fake_scores, real_logits, fake_logits


def discriminator_step(nets, opt_d, real, real_labels, z, fake_labels, alpha, spec=ASSIGNMENT,
                       runtime=PLAIN, gen=None):
    """One critic (and classifier) update; returns (loss, stats tensor in D_STATS's order).
    With spec.diffaug the critic sees real and fake DiffAugmented (independent draws), and
    the penalty's interpolates are made from those augmented images."""
    zero = torch.zeros((), device=real.device)
    with runtime.autocast():
        with torch.no_grad():
            fake = nets.G_fake(z).to(real.dtype)  # the generator is not trained here
        if spec.diffaug:
            augment = DiffAugment(spec.diffaug)
            real, fake = augment(real, gen), augment(fake, gen)
        real_scores, fake_scores, real_logits, fake_logits = _critic_scores(nets, real, fake)
        # The penalty's double backward runs through the plain module, outside torch.compile.
        gp = (gradient_penalty(lambda x: nets.D(x)[0], real, fake, alpha, spec.gp_weight)
              if spec.gp_weight else zero)
    real_scores, fake_scores, gp = real_scores.float(), fake_scores.float(), gp.float()
    loss = spec.critic_loss(real_scores, fake_scores) + gp
    real_class = fake_class = acc = zero
    if real_logits is not None:
        real_class = auxiliary_class_loss(real_logits.float(), real_labels)
        fake_class = auxiliary_class_loss(fake_logits.float(), fake_labels)
        loss = loss + real_class + fake_class
        acc = (real_logits.argmax(1) == real_labels).float().mean() * 100
    descend(opt_d, loss, spec.step_cap)
    if spec.clip:
        clip_weights(nets.D, spec.clip)
    stats = torch.stack([gp, fake_scores.mean(), real_scores.mean(), real_class, fake_class, acc,
                         loss])
    return loss.detach(), stats.detach()


def gan_iteration(nets, opt_g, opt_d, real, real_labels, step, spec, runtime, gen,
                  iteration=None):
    """The critic step and, when spec.trains_generator(step), a generator step before it
    (IE 534) or after it (spec.d_first). All draws come from `gen` in the same order either
    way; `iteration` warms up the moving average. Returns (g loss or 0, d loss, d stats)."""
    dev, n, classes = real.device, len(real), nets.D.num_classes
    z_d, fake_labels = sample_noise(n, spec.latent_dim, classes, gen, spec.noise)
    alpha = torch.rand(n, generator=gen, device=dev)
    loss_g = torch.zeros((), device=dev)
    train_g = spec.trains_generator(step)
    if train_g:
        z_g, g_labels = sample_noise(n, spec.latent_dim, classes, gen, spec.noise)
    if train_g and not spec.d_first:
        loss_g = generator_step(nets, opt_g, z_g, g_labels, spec, runtime, gen, iteration)
    loss_d, stats = discriminator_step(nets, opt_d, real, real_labels, z_d, fake_labels, alpha,
                                       spec, runtime, gen)
    if train_g and spec.d_first:
        loss_g = generator_step(nets, opt_g, z_g, g_labels, spec, runtime, gen, iteration)
    return loss_g, loss_d, stats


@torch.no_grad()
def save_samples(G, z, path, nrow=10):
    """The fixed noise through the generator in eval mode, as a grid PNG of nrow columns."""
    was_training = G.training
    G.eval()
    images = G(z)
    G.train(was_training)
    save_grid(to_unit(images), path, nrow=nrow)
    return images


def build_gan(settings, num_classes, runtime, dist=None, channels=3, image_size=32):
    """The networks (initialised from the seed), their training callables and optimizers as
    the Settings say; num_classes: the class head's size (0: unconditional). Under DDP only
    G_train and D_train are wrapped: the frozen critic has nothing to average."""
    arch, width, g, optim = (settings.model.arch, settings.model.width, settings.gan,
                             settings.optim)
    if ARCHITECTURES[arch].generator is None:
        raise UserError(f"--arch {arch} is a classifier (train_baseline.py): it has no "
                        "generator")
    if g.latent_dim <= num_classes:
        raise UserError(f"--latent_dim {g.latent_dim} leaves no random values after the "
                        f"one-hot class of {num_classes} classes: pass --latent_dim "
                        f"{num_classes + 1} or more")
    dist = dist or Dist()
    seed_everything(settings.seed)
    G = generator(arch, g.latent_dim, width, channels, image_size)
    D = discriminator(arch, width, num_classes, channels, image_size,
                      spectral_norm=g.spectral_norm == "on")
    if runtime.sync_bn:
        G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
    G, D = runtime.module(G), runtime.module(D)
    # the moving average starts as the generator; every rank updates it from the same weights
    G_ema = copy.deepcopy(G).requires_grad_(False).eval() if g.ema else None
    nets = GanNets(G, D, G_train=runtime.compiled(dist.wrap(G, runtime.device)),
                   D_train=runtime.compiled(dist.wrap(D, runtime.device)),
                   D_frozen=runtime.compiled(D), G_fake=runtime.compiled(G), G_ema=G_ema)
    make = lambda m: runtime.optimizer(optim.optimizer, m.parameters(), optim.lr,  # noqa: E731
                                       (optim.beta1, optim.beta2))
    return nets, make(G), make(D)
