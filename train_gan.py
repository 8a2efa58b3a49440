"""Part 1, with the generator: ACGAN + WGAN-GP on CIFAR-10.

    python train_gan.py                                 # width 196, 200 epochs (the assignment)
    python train_gan.py --width 128 --epochs 400        # the assignment's other option
    python train_gan.py --resume                        # continue an interrupted run
    python train_gan.py --dataset digits --width 32 --lr 1e-3 --batch_size 64 --epochs 25 \
        --out_dir runs/demo                             # a CPU demo in about two minutes

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

import torch

from data import load_dataset, make_generator
from losses import (auxiliary_class_loss, gradient_penalty, wgan_critic_loss,
                    wgan_generator_loss)
from models import Discriminator, Generator
from utils import (ArgumentParser, JsonLog, UserError, adam_step_guard, add_shared_flags,
                   atomic_save, check_positive, check_same_settings, check_shared_flags,
                   evaluate, info, load_checkpoint, load_state, make_loaders, plot_curves,
                   progress, resolve_device, resolve_resume, run_main, save_grid, save_model,
                   seed_everything, settings, to_unit, write_settings)

CHECKPOINT, LOG, CONFIG = "gan.ckpt", "gan_log.jsonl", "gan_config.json"
# What the discriminator step reports, in the order the assignment prints them.
D_STATS = ("gp", "d_fake", "d_real", "real_class", "fake_class", "real_acc")
EXIT_DIVERGED = 3
GAN_PANELS = [("critic score", ["d_real", "d_fake"]), ("Wasserstein estimate", ["w_dist"]),
              ("gradient penalty", ["gp"]), ("class cross-entropy", ["real_class", "fake_class"]),
              ("generator loss", ["g_loss"]), ("accuracy (%)", ["real_acc", "test_acc"])]


class Diverged(Exception):
    """A loss became NaN or infinite."""


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_flags(p, epochs=200, lr=1e-4, batch_size=128)
    g = p.add_argument_group("GAN")
    g.add_argument("--gen_train", type=int, default=1,
                   help="train the generator every N discriminator steps")
    g.add_argument("--gp_weight", type=float, default=10.0, help="gradient penalty lambda")
    g.add_argument("--latent_dim", type=int, default=100,
                   help="noise values per image; the first num_classes are the one-hot class")
    g.add_argument("--beta1", type=float, default=0.0, help="Adam beta1 of both networks")
    g.add_argument("--beta2", type=float, default=0.9, help="Adam beta2 of both networks")
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

def generator_step(G, D, opt_g, z, labels, step_cap=1024):
    """One generator update through a frozen discriminator; returns the loss (a tensor)."""
    D.requires_grad_(False)  # the critic's weights collect no gradient here
    try:
        scores, logits = D(G(z))
        loss = wgan_generator_loss(scores) + auxiliary_class_loss(logits, labels)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        adam_step_guard(opt_g, step_cap)
    finally:
        D.requires_grad_(True)
    return loss.detach()


def discriminator_step(G, D, opt_d, real, real_labels, z, fake_labels, alpha, gp_weight=10.0,
                       step_cap=1024):
    """One critic/classifier update; returns (loss, stats tensor in the order of D_STATS)."""
    with torch.no_grad():
        fake = G(z)  # the generator is not trained here
    n = len(real)
    # Real and fake in one pass: LayerNorm is per sample, so this equals two passes.
    scores, logits = D(torch.cat([real, fake]))
    real_scores, fake_scores = scores[:n], scores[n:]
    real_class = auxiliary_class_loss(logits[:n], real_labels)
    fake_class = auxiliary_class_loss(logits[n:], fake_labels)
    gp = gradient_penalty(lambda x: D(x)[0], real, fake, alpha, gp_weight)
    loss = wgan_critic_loss(real_scores, fake_scores) + real_class + fake_class + gp
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    adam_step_guard(opt_d, step_cap)
    acc = (logits[:n].argmax(1) == real_labels).float().mean() * 100
    stats = torch.stack([gp, fake_scores.mean(), real_scores.mean(), real_class, fake_class, acc])
    return loss.detach(), stats.detach()


def train_gan_epoch(G, D, opt_g, opt_d, batches, epoch, args, *, start=0, log=None):
    """One epoch of ACGAN + WGAN-GP; returns the epoch's means of D_STATS (and g_loss).

    The random draws of step i come from a generator seeded by (seed, epoch, i, rank), so a
    run resumed at any step draws what an uninterrupted run would. Losses are checked for NaN
    on the device and read back only every --log_every steps (and at the end of the epoch).
    """
    G.train()
    D.train()
    dev, rank = batches.device, batches.rank
    num_classes, steps = D.num_classes, len(batches)
    sums = torch.zeros(len(D_STATS) + 1, device=dev)  # D_STATS, then the generator loss
    g_steps = torch.zeros((), device=dev)
    first_bad = torch.full((), -1, dtype=torch.long, device=dev)
    done = 0
    for i, (real, real_labels) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                                     f"epoch {epoch}"), start):
        gen = make_generator(dev, args.seed, "gan", epoch, i, rank)
        z_d, fake_labels = sample_noise(len(real), args.latent_dim, num_classes, gen)
        alpha = torch.rand(len(real), generator=gen, device=dev)
        loss_g = torch.zeros((), device=dev)
        if i % args.gen_train == 0:
            z_g, g_labels = sample_noise(len(real), args.latent_dim, num_classes, gen)
            loss_g = generator_step(G, D, opt_g, z_g, g_labels, args.adam_step_cap)
            g_steps += 1
        loss_d, stats = discriminator_step(G, D, opt_d, real, real_labels, z_d, fake_labels,
                                           alpha, args.gp_weight, args.adam_step_cap)
        sums += torch.cat([stats, loss_g[None]])
        bad = ~torch.isfinite(loss_d + loss_g)
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, i), first_bad)
        done += 1
        if (i + 1) % args.log_every == 0 or i + 1 == steps:
            if first_bad.item() >= 0:
                raise Diverged(f"a loss became NaN or infinite at epoch {epoch + 1}, "
                               f"step {first_bad.item() + 1}")
            means = _means(sums, done, g_steps)
            if log is not None and (i + 1) % args.log_every == 0:
                info(f"epoch {epoch + 1} step {i + 1}/{steps} " +
                     " ".join(f"{k} {v:.3f}" for k, v in means.items()))
                log.write(event="step", epoch=epoch + 1, step=i + 1, **means)
    return _means(sums, max(done, 1), g_steps)


def _means(sums, n, g_steps):
    values = (sums[:-1] / n).tolist() + [(sums[-1] / g_steps.clamp(min=1)).item()]
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


def save_checkpoint(path, G, D, opt_g, opt_d, epoch, step, config, history, seconds):
    """Both networks and optimizers, where training stands, and the run's settings.

    The random state is not stored: every draw derives from (seed, epoch, step).
    """
    atomic_save({"kind": "gan", "epoch": epoch, "step": step, "generator": G.state_dict(),
                 "discriminator": D.state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "settings": config, "history": history,
                 "seconds": seconds}, path)


def build_gan(args, num_classes, device):
    if args.latent_dim < num_classes:
        raise UserError(f"--latent_dim {args.latent_dim} cannot hold the one-hot class of "
                        f"{num_classes} classes")
    seed_everything(args.seed)
    G = Generator(args.latent_dim, args.width).to(device)
    D = Discriminator(args.width, num_classes).to(device)
    betas = (args.beta1, args.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=betas)
    return G, D, opt_g, opt_d


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_shared_flags(args)
    check_positive(args, "gen_train", "latent_dim")
    if args.gp_weight < 0 or not (0 <= args.beta1 < 1 and 0 <= args.beta2 < 1):
        raise UserError("--gp_weight must be >= 0 and the Adam betas in [0, 1)")
    device = resolve_device(args.device)
    config = settings(args)
    ckpt_path = os.path.join(args.out_dir, CHECKPOINT)
    resume_from = resolve_resume(args, ckpt_path)
    ckpt = load_checkpoint(resume_from, kind="gan") if resume_from else None
    if ckpt:
        check_same_settings(ckpt["settings"], config, resume_from)

    data = load_dataset(args.dataset, args.data_dir, args.cache_dir, args.subset, args.seed)
    train, test = make_loaders(args, data, device)
    G, D, opt_g, opt_d = build_gan(args, data.num_classes, device)
    start_epoch, history, seconds = 0, [], 0.0
    if ckpt:
        for module, key in ((G, "generator"), (D, "discriminator"), (opt_g, "opt_g"),
                            (opt_d, "opt_d")):
            load_state(module, ckpt[key], resume_from, key)
        start_epoch, history, seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        info(f"resuming {resume_from} after epoch {start_epoch}")

    info("settings: " + json.dumps(config))
    write_settings(args, os.path.join(args.out_dir, CONFIG))
    log = JsonLog(os.path.join(args.out_dir, LOG))
    z_fixed, _ = fixed_noise(data.num_classes, args.latent_dim, args.seed, device)
    info(f"{data.name}: {len(data.train_y)} training images, {len(train)} steps per epoch on "
         f"{device}; samples in {os.path.join(args.out_dir, 'output')}")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        try:
            means = train_gan_epoch(G, D, opt_g, opt_d, train, epoch, args, log=log)
        except Diverged as e:
            kept = (f"the last good checkpoint (after epoch {history[-1]['epoch']}) is kept at "
                    f"{ckpt_path}" if history else "no checkpoint had been written yet")
            info(f"error: {e}; training stopped and {kept}")
            log.write(event="diverged", message=str(e))
            raise SystemExit(EXIT_DIVERGED)
        test_acc, _ = evaluate(D, test)
        dt = time.time() - t0
        seconds += dt
        rec = dict(epoch=epoch + 1, test_acc=round(test_acc, 2), seconds=round(dt, 2),
                   images_per_s=round(len(train) * args.batch_size / dt, 1), **means,
                   w_dist=round(means["d_real"] - means["d_fake"], 4))
        history.append(rec)
        log.write(event="epoch", **rec)
        info(f"epoch {epoch + 1}/{args.epochs} test acc {test_acc:.2f} real acc "
             f"{means['real_acc']:.2f} gp {means['gp']:.3f} ({dt:.1f}s)")
        save_samples(G, z_fixed, os.path.join(args.out_dir, "output", f"{epoch:03d}.png"))
        save_checkpoint(ckpt_path, G, D, opt_g, opt_d, epoch + 1, 0, config, history, seconds)
        plot_curves(history, GAN_PANELS, os.path.join(args.out_dir, "gan_curves.png"),
                    "ACGAN + WGAN-GP, epoch means")

    final = history[-1] if history else {}
    metrics = dict(test_acc=final.get("test_acc"), epochs=args.epochs, seconds=round(seconds, 1))
    paths = {}
    for name, module in (("generator", G), ("discriminator", D)):
        paths[name] = os.path.join(args.out_dir, f"{name}.model")
        save_model(paths[name], module, name, config, metrics, data.classes, "train_gan.py")
    print(json.dumps(dict(script="train_gan", dataset=data.name, **paths, **metrics)), flush=True)
    return metrics


if __name__ == "__main__":
    run_main(main)
