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
import time
from dataclasses import dataclass

import torch

from checkpoints import atomic_save, load_state, save_model
from cli import (FRACTION, NONNEGATIVE, POSITIVE_INT, ArgumentParser, Diverged, Stopped,
                 UserError, add_shared_flags, info, progress, run_main)
from data import make_generator
from distributed import Dist
from losses import auxiliary_class_loss, gradient_penalty, wgan_critic_loss, wgan_generator_loss
from models import Discriminator, Generator
from pictures import plot_curves, save_grid, to_unit
from runtime import Runtime, add_speed_flags, seed_everything
from training import adam_step_guard, evaluate, open_run

CHECKPOINT, LOG, CONFIG = "gan.ckpt", "gan_log.jsonl", "gan_config.json"
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
    add_speed_flags(p)
    g = p.add_argument_group("GAN")
    g.add_argument("--gen_train", type=POSITIVE_INT, default=1,
                   help="train the generator every N discriminator steps")
    g.add_argument("--gp_weight", type=NONNEGATIVE, default=10.0, help="gradient penalty lambda")
    g.add_argument("--latent_dim", type=POSITIVE_INT, default=100,
                   help="noise values per image; the first num_classes are the one-hot class")
    g.add_argument("--beta1", type=FRACTION, default=0.0, help="Adam beta1 of both networks")
    g.add_argument("--beta2", type=FRACTION, default=0.9, help="Adam beta2 of both networks")
    g.add_argument("--sync_bn", action="store_true",
                   help="with several GPUs: the generator's BatchNorm uses the statistics of "
                        "the global batch (SyncBatchNorm)")
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


def train_gan_epoch(nets, opt_g, opt_d, batches, epoch, args, runtime=PLAIN, *, start=0,
                    sums=None, stop=None, dist=None, log=None):
    """Train from batch `start` of the epoch to its end, or until stop(step) says so.

    The random draws of step i come from a generator seeded by (seed, epoch, i, rank), so a
    run resumed at any step draws what an uninterrupted run would. sums carries the running
    sums of the steps before `start` (D_STATS, the generator loss, generator steps, steps).
    Losses are checked for NaN on the device and read back only every --log_every steps, at
    the end of the epoch and before stopping. Returns (next batch index, sums).
    """
    nets.G.train()
    nets.D.train()
    dist = dist or Dist()
    dev, steps = batches.device, len(batches)
    sums = torch.zeros(len(D_STATS) + 3, device=dev) if sums is None else sums.to(dev)
    first_bad = torch.full((), -1.0, device=dev)
    for i, (real, real_labels) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                                     f"epoch {epoch + 1}"), start):
        gen = make_generator(dev, args.seed, "gan", epoch, i, batches.rank)
        loss_g, loss_d, stats = gan_iteration(nets, opt_g, opt_d, real, real_labels, i, args,
                                              runtime, gen)
        # in place, with Python scalars: no host-device copies
        sums[:len(D_STATS)] += stats
        sums[len(D_STATS)] += loss_g
        sums[len(D_STATS) + 1] += float(i % args.gen_train == 0)
        sums[len(D_STATS) + 2] += 1
        bad = ~torch.isfinite(loss_d + loss_g)
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
        stopping = stop is not None and i + 1 < steps and stop(i, dev)
        if (i + 1) % args.log_every == 0 or i + 1 == steps or stopping:
            # one rank's NaN reaches every rank's weights: all stop together
            bad_step = int(dist.all_max(first_bad.clone()).item())
            if bad_step >= 0:
                raise Diverged(f"a loss became NaN or infinite at epoch {epoch + 1}, "
                               f"step {bad_step + 1}")
            if log is not None and (i + 1) % args.log_every == 0:
                means = epoch_means(sums)
                info(f"epoch {epoch + 1} step {i + 1}/{steps} " +
                     " ".join(f"{k} {v:.3f}" for k, v in means.items()))
                log.write(event="step", epoch=epoch + 1, step=i + 1, **means)
        if stopping:
            return i + 1, sums
    return steps, sums


def epoch_means(sums):
    """The running sums of train_gan_epoch as means: D_STATS per step, g_loss per G step."""
    s = sums.tolist()
    n, g_steps = max(s[-1], 1.0), max(s[-2], 1.0)
    values = [v / n for v in s[:len(D_STATS)]] + [s[len(D_STATS)] / g_steps]
    return {k: round(v, 4) for k, v in zip(D_STATS + ("g_loss",), values)}


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


def save_checkpoint(path, nets, opt_g, opt_d, epoch, step, sums, config, history, seconds):
    """Both networks and optimizers, where training stands, and the run's settings.

    epoch counts completed epochs; step > 0 marks a checkpoint written mid-epoch (on a
    signal), with the running sums of that epoch so far. No random state is stored: every
    draw derives from (seed, epoch, step, rank).
    """
    atomic_save({"kind": "gan", "epoch": epoch, "step": step,
                 "partial": None if sums is None else sums.detach().cpu(),
                 "generator": nets.G.state_dict(), "discriminator": nets.D.state_dict(),
                 "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "settings": config,
                 "history": history, "seconds": seconds}, path)


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
    if getattr(args, "sync_bn", False):
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
    with open_run(args, "gan", CHECKPOINT, LOG, CONFIG) as r:
        if args.sync_bn and r.runtime.device.type != "cuda":
            raise UserError("--sync_bn needs CUDA (SyncBatchNorm has no CPU kernels)")
        return _train(args, r)


def _train(args, r):
    rt, dist = r.runtime, r.dist
    data, train, test = r.load_data()
    nets, opt_g, opt_d = build_gan(args, data.num_classes, rt, dist)
    start_epoch, start_step, partial = r.position()
    history, seconds = [], 0.0
    if r.ckpt:
        for module, key in ((nets.G, "generator"), (nets.D, "discriminator"), (opt_g, "opt_g"),
                            (opt_d, "opt_d")):
            load_state(module, r.ckpt[key], r.resume_from, key)
        history, seconds = r.ckpt["history"], r.ckpt["seconds"]
    r.begin()
    grids = os.path.join(args.out_dir, "output")
    if not r.ckpt and dist.is_main and os.path.isdir(grids):  # a fresh run: no stale grids
        for f in os.listdir(grids):
            if f[:3].isdigit() and f.endswith(".png"):
                os.remove(os.path.join(grids, f))
    z_fixed, _ = fixed_noise(data.num_classes, args.latent_dim, args.seed, rt.device)
    r.say(f"{data.name}: {len(data.train_y)} training images, {len(train)} steps per epoch on "
          f"{rt.device}; samples in {grids}")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        try:
            step, sums = train_gan_epoch(nets, opt_g, opt_d, train, epoch, args, rt,
                                         start=start_step, sums=partial, stop=r.stop, dist=dist,
                                         log=r.log)
        except Diverged as e:
            kept = (f"the last good checkpoint (after epoch {history[-1]['epoch']}) is kept at "
                    f"{r.ckpt_path}" if history else "no checkpoint had been written yet")
            if r.log is not None:
                r.log.write(event="diverged", message=str(e))
            raise Diverged(f"{e}; training stopped and {kept}") from None
        seconds += time.time() - t0
        start_step, partial = 0, None
        if step < len(train):  # stopped on a signal
            if dist.is_main:
                save_checkpoint(r.ckpt_path, nets, opt_g, opt_d, epoch, step, sums, r.config,
                                history, seconds)
            raise Stopped(f"stopped at epoch {epoch + 1}, step {step}; resume with --resume "
                          f"(checkpoint {r.ckpt_path})")
        means = epoch_means(dist.all_sum(sums))
        if not dist.is_main:
            continue
        test_acc, _ = evaluate(nets.D, test, rt)
        dt = time.time() - t0
        rec = dict(epoch=epoch + 1, test_acc=round(test_acc, 2), seconds=round(dt, 2),
                   images_per_s=round(len(train) * args.batch_size / dt, 1), **means,
                   w_dist=round(means["d_real"] - means["d_fake"], 4))
        history.append(rec)
        r.log.write(event="epoch", **rec)
        info(f"epoch {epoch + 1}/{args.epochs} test acc {test_acc:.2f} real acc "
             f"{means['real_acc']:.2f} gp {means['gp']:.3f} ({dt:.1f}s)")
        save_samples(nets.G, z_fixed, os.path.join(grids, f"{epoch:03d}.png"))
        save_checkpoint(r.ckpt_path, nets, opt_g, opt_d, epoch + 1, 0, None, r.config, history,
                        seconds)
        plot_curves(history, GAN_PANELS, os.path.join(args.out_dir, "gan_curves.png"),
                    "ACGAN + WGAN-GP, epoch means")

    final = history[-1] if history else {}
    metrics = dict(test_acc=final.get("test_acc"), epochs=args.epochs, seconds=round(seconds, 1))
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
