"""Part 1, with the generator: ACGAN + WGAN-GP on CIFAR-10.

    python train_gan.py                                 # width 196, 200 epochs (the assignment)
    python train_gan.py --width 128 --epochs 400        # the assignment's other option
    python train_gan.py --resume                        # continue an interrupted run
    python train_gan.py --dataset digits --width 32 --lr 1e-3 --batch_size 64 --epochs 20 \
        --out_dir runs/demo                             # a CPU demo in about three minutes

Each iteration: a generator step (every --gen_train iterations) with the discriminator frozen,
loss -E[D(G(z))] + CE(aux(G(z)), c); then a discriminator step, loss E[D(fake)] - E[D(real)]
+ CE on real + CE on fake + a gradient penalty (lambda 10) on real/fake interpolates. The first
10 entries of the 100 noise values are the one-hot class c. Both nets use Adam (lr 1e-4, betas
(0.0, 0.9)) with the assignment's step-overflow guard.

Writes to --out_dir: output/000.png, 001.png, ... (after every epoch, the same 100 noise
vectors, class c in column c), gan.ckpt (every epoch, for --resume), generator.model and
discriminator.model (which visualize.py loads), gan_log.jsonl, gan_config.json and
gan_curves.png. The last line on stdout is JSON with the final figures.
"""
import json
import os
from dataclasses import dataclass

import torch

from checkpoints import OPTIMIZER, WEIGHTS, load_state, save_model
from cli import (FRACTION, NONNEGATIVE, POSITIVE_INT, ArgumentParser, UserError,
                 add_shared_flags, run_main)
from data import make_generator
from distributed import Dist
from losses import auxiliary_class_loss, gradient_penalty, wgan_critic_loss, wgan_generator_loss
from models import Discriminator, Generator
from pictures import plot_curves, save_grid, to_unit
from runtime import Runtime, add_speed_flags, seed_everything
from training import adam_step_guard, evaluate, open_run

PLAIN = Runtime(torch.device("cpu"))  # fp32, eager: the steps' default
# What the discriminator step reports, in the order the assignment prints them.
D_STATS = ("gp", "d_fake", "d_real", "real_class", "fake_class", "real_acc")
GAN_PANELS = [("critic score", ["d_real", "d_fake"]), ("Wasserstein estimate", ["w_dist"]),
              ("gradient penalty", ["gp"]), ("class cross-entropy", ["real_class", "fake_class"]),
              ("generator loss", ["g_loss"]), ("accuracy (%)", ["real_acc", "test_acc"])]


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    option = "the assignment's two options: width 196 for 200 epochs, width 128 for 400"
    add_shared_flags(p, epochs=200, lr=1e-4, batch_size=128,
                     notes={"epochs": option, "width": option})
    add_speed_flags(p, training=True).add_argument(
        "--sync_bn", choices=("auto", "on", "off"), default="auto",
        help="the generator's BatchNorm over the global batch (SyncBatchNorm): auto is on for "
             "several CUDA processes, as the assignment normalises over all 128 images")
    g = p.add_argument_group("GAN")
    g.add_argument("--gen_train", type=POSITIVE_INT, default=1,
                   help="train the generator every N discriminator steps")
    g.add_argument("--gp_weight", type=NONNEGATIVE, default=10.0, help="gradient penalty lambda")
    g.add_argument("--latent_dim", type=POSITIVE_INT, default=100,
                   help="noise values per image; the first num_classes are the one-hot class")
    g.add_argument("--beta1", type=FRACTION, default=0.0, help="Adam beta1 of both networks")
    g.add_argument("--beta2", type=FRACTION, default=0.9, help="Adam beta2 of both networks")
    return p


# ----------------------------------------------------------------------------- noise

def class_noise(labels, latent_dim, num_classes, generator):
    """N(0, 1) noise (B, latent_dim) whose first num_classes entries are the one-hot label."""
    z = torch.randn(len(labels), latent_dim, generator=generator, device=labels.device)
    z[:, :num_classes] = torch.nn.functional.one_hot(labels, num_classes).to(z.dtype)
    return z


def sample_noise(n, latent_dim, num_classes, generator):
    """Random classes and their noise: (z (n, latent_dim), labels (n,))."""
    labels = torch.randint(0, num_classes, (n,), generator=generator, device=generator.device)
    return class_noise(labels, latent_dim, num_classes, generator), labels


def fixed_noise(num_classes, latent_dim, seed, device, per_class=10):
    """The grid's noise, drawn once: image i has class i % num_classes, so column c is class c."""
    g = make_generator("cpu", seed, "fixed_noise")
    labels = torch.arange(num_classes).repeat(per_class)
    return class_noise(labels, latent_dim, num_classes, g).to(device), labels.to(device)


# ----------------------------------------------------------------------------- steps

@dataclass
class GanNets:
    """The two networks and the callables the training steps run them through.

    G and D are the plain modules (saved, evaluated, and used for the gradient penalty, whose
    double backward cannot go through torch.compile). G_train and D_train are what the steps
    train through (compiled and/or wrapped for several processes); D_frozen is the critic the
    generator step looks through, and G_fake makes the critic's fakes without a graph.
    """
    G: torch.nn.Module
    D: torch.nn.Module
    G_train: object = None
    D_train: object = None
    D_frozen: object = None
    G_fake: object = None

    def __post_init__(self):
        for name, default in (("G_train", self.G), ("D_train", self.D), ("D_frozen", self.D),
                              ("G_fake", self.G)):
            if getattr(self, name) is None:
                setattr(self, name, default)


def generator_step(nets, opt_g, z, labels, runtime=PLAIN, step_cap=1024):
    """One generator update through a frozen discriminator; returns the loss (a tensor)."""
    nets.D.requires_grad_(False)  # the critic's weights collect no gradient here
    try:
        with runtime.autocast():
            scores, logits = nets.D_frozen(nets.G_train(z))
        loss = wgan_generator_loss(scores.float()) + auxiliary_class_loss(logits.float(), labels)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        adam_step_guard(opt_g, step_cap)
    finally:
        nets.D.requires_grad_(True)
    return loss.detach()


def discriminator_step(nets, opt_d, real, real_labels, z, fake_labels, alpha, gp_weight=10.0,
                       runtime=PLAIN, step_cap=1024):
    """One critic/classifier update; returns (loss, stats tensor in the order of D_STATS)."""
    n = len(real)
    with runtime.autocast():
        with torch.no_grad():
            fake = nets.G_fake(z)  # the generator is not trained here
        # Real and fake in one pass: LayerNorm is per sample, so this equals two passes.
        scores, logits = nets.D_train(torch.cat([real, fake.to(real.dtype)]))
        # The penalty's double backward runs through the plain module, outside torch.compile.
        gp = gradient_penalty(lambda x: nets.D(x)[0], real, fake, alpha, gp_weight)
    scores, logits, gp = scores.float(), logits.float(), gp.float()
    real_scores, fake_scores = scores[:n], scores[n:]
    real_class = auxiliary_class_loss(logits[:n], real_labels)
    fake_class = auxiliary_class_loss(logits[n:], fake_labels)
    loss = wgan_critic_loss(real_scores, fake_scores) + real_class + fake_class + gp
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    adam_step_guard(opt_d, step_cap)
    acc = (logits[:n].argmax(1) == real_labels).float().mean() * 100
    stats = torch.stack([gp, fake_scores.mean(), real_scores.mean(), real_class, fake_class, acc])
    return loss.detach(), stats.detach()


def gan_iteration(nets, opt_g, opt_d, real, real_labels, step, args, runtime, gen):
    """A full iteration: the generator step (every args.gen_train) and the critic step.

    All draws (the noise, the classes, the interpolation weights) come from `gen`.
    Returns (generator loss or 0, critic loss, critic stats).
    """
    dev, n = real.device, len(real)
    z_d, fake_labels = sample_noise(n, args.latent_dim, nets.D.num_classes, gen)
    alpha = torch.rand(n, generator=gen, device=dev)
    loss_g = torch.zeros((), device=dev)
    if step % args.gen_train == 0:
        z_g, g_labels = sample_noise(n, args.latent_dim, nets.D.num_classes, gen)
        loss_g = generator_step(nets, opt_g, z_g, g_labels, runtime, args.adam_step_cap)
    loss_d, stats = discriminator_step(nets, opt_d, real, real_labels, z_d, fake_labels, alpha,
                                       args.gp_weight, runtime, args.adam_step_cap)
    return loss_g, loss_d, stats


class GanTrainer:
    """ACGAN + WGAN-GP for the shared epoch loop (training.Run.fit)."""
    kind = "gan"
    fields = {"generator": WEIGHTS, "discriminator": WEIGHTS, "opt_g": OPTIMIZER,
              "opt_d": OPTIMIZER}
    sums_width = len(D_STATS) + 3  # D_STATS, the generator loss, generator steps, steps

    def __init__(self, args, nets, opt_g, opt_d, runtime=PLAIN, *, train=None, test=None,
                 z_fixed=None):
        """train and test are the batches (the images per epoch, the rank and the test
        accuracy come from them); z_fixed is the grid's noise."""
        self.args, self.nets, self.opt_g, self.opt_d = args, nets, opt_g, opt_d
        self.runtime, self.test, self.z_fixed = runtime, test, z_fixed
        self.rank = train.rank if train is not None else 0
        self.images_per_epoch = len(train) * args.batch_size if train is not None else 0
        self.grids = os.path.join(args.out_dir, "output")

    def state(self):
        return {"generator": self.nets.G.state_dict(), "discriminator": self.nets.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, ckpt, path):
        for module, key in ((self.nets.G, "generator"), (self.nets.D, "discriminator"),
                            (self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            load_state(module, ckpt[key], path, key)

    def begin_epoch(self, epoch):
        self.nets.G.train()
        self.nets.D.train()
        self.epoch = epoch

    def step(self, i, real, labels, sums):
        """One iteration. Its random draws come from a generator seeded by (seed, epoch, i,
        rank), so a run resumed at any step draws what an uninterrupted run would."""
        gen = make_generator(real.device, self.args.seed, "gan", self.epoch, i, self.rank)
        loss_g, loss_d, stats = gan_iteration(self.nets, self.opt_g, self.opt_d, real, labels,
                                              i, self.args, self.runtime, gen)
        n = len(D_STATS)  # in place, with Python scalars: no host-device copies
        sums[:n] += stats
        sums[n] += loss_g
        sums[n + 1] += float(i % self.args.gen_train == 0)
        sums[n + 2] += 1
        return loss_d + loss_g

    def means(self, sums):
        """The running sums as means: D_STATS per step, the generator loss per G step."""
        s = sums.tolist()
        n, g_steps = max(s[-1], 1.0), max(s[-2], 1.0)
        values = [v / n for v in s[:len(D_STATS)]] + [s[len(D_STATS)] / g_steps]
        return {k: round(v, 4) for k, v in zip(D_STATS + ("g_loss",), values)}

    def end_epoch(self, epoch, means, seconds):
        test_acc, _ = evaluate(self.nets.D, self.test, self.runtime)
        save_samples(self.nets.G, self.z_fixed, os.path.join(self.grids, f"{epoch:03d}.png"))
        record = dict(test_acc=round(test_acc, 2),
                      images_per_s=round(self.images_per_epoch / max(seconds, 1e-9), 1), **means,
                      w_dist=round(means["d_real"] - means["d_fake"], 4))
        return record, (f"test acc {test_acc:.2f} real acc {means['real_acc']:.2f} "
                        f"gp {means['gp']:.3f}")

    def plot(self, history):
        plot_curves(history, GAN_PANELS, os.path.join(self.args.out_dir, "gan_curves.png"),
                    "ACGAN + WGAN-GP, epoch means")


# ----------------------------------------------------------------------------- outputs

@torch.no_grad()
def save_samples(G, z, path):
    """The fixed noise through the generator in eval mode, as a 10-column grid PNG."""
    was_training = G.training
    G.eval()
    images = G(z)
    G.train(was_training)
    save_grid(to_unit(images), path, nrow=10)
    return images


def build_gan(args, num_classes, runtime, dist=None):
    """The networks (initialised from the seed), their training callables and optimizers.

    With several processes G_train and D_train are wrapped in DistributedDataParallel, so
    each backward averages the gradients of all processes; the generator step looks through
    the plain critic (frozen, nothing to average) and the penalty's double backward goes
    through the plain module into the same single backward of the critic's loss.
    """
    if args.latent_dim < num_classes:
        raise UserError(f"--latent_dim {args.latent_dim} cannot hold the one-hot class of "
                        f"{num_classes} classes")
    dist = dist or Dist()
    seed_everything(args.seed)
    G = Generator(args.latent_dim, args.width)
    if runtime.sync_bn:
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
    G = runtime.module(G)
    D = runtime.module(Discriminator(args.width, num_classes))
    fast_g, fast_d = runtime.compiled(G), runtime.compiled(D)
    nets = GanNets(G, D, G_train=runtime.compiled(dist.wrap(G, runtime.device)),
                   D_train=runtime.compiled(dist.wrap(D, runtime.device)), D_frozen=fast_d,
                   G_fake=fast_g)
    betas = (args.beta1, args.beta2)
    return (nets, runtime.adam(G.parameters(), args.lr, betas),
            runtime.adam(D.parameters(), args.lr, betas))


def run(args):
    """Train as the flags say; returns (final figures, GanNets)."""
    with open_run(args, GanTrainer) as r:
        return _train(args, r)


def _train(args, r):
    rt, dist = r.runtime, r.dist
    data, train, test = r.load_data()
    nets, opt_g, opt_d = build_gan(args, data.num_classes, rt, dist)
    z_fixed, _ = fixed_noise(data.num_classes, args.latent_dim, args.seed, rt.device)
    trainer = GanTrainer(args, nets, opt_g, opt_d, rt, train=train, test=test, z_fixed=z_fixed)
    if r.ckpt:
        trainer.load(r.ckpt, r.resume_from)
    r.begin()
    if not r.ckpt and dist.is_main and os.path.isdir(trainer.grids):  # fresh: no stale grids
        for f in os.listdir(trainer.grids):
            if f[:3].isdigit() and f.endswith(".png"):
                os.remove(os.path.join(trainer.grids, f))
    r.say(f"{data.name}: {len(data.train_y)} training images, {len(train)} steps per epoch on "
          f"{rt.device}; samples in {trainer.grids}")
    final = r.fit(trainer, train)
    metrics = dict(test_acc=final.get("test_acc"), epochs=args.epochs, seconds=round(r.seconds, 1))
    for name, module in (("generator", nets.G), ("discriminator", nets.D)):
        metrics[name] = os.path.join(args.out_dir, f"{name}.model")
        if dist.is_main:
            save_model(metrics[name], module, name, r.config, metrics, data.classes,
                       "train_gan.py")
    return metrics, nets


def main(argv=None):
    args = build_parser().parse_args(argv)
    metrics, _ = run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dict(script="train_gan", dataset=args.dataset, **metrics)), flush=True)
    return metrics


if __name__ == "__main__":
    run_main(main)
