"""Sampling a generator: its noise, classes and conditioning, the same in training, metrics and
figures. A class-conditional generator (--acgan on) reads noise whose first num_classes values
are the one-hot class; an unconditional one (num_classes 0) reads plain noise.
"""
import torch

from utils.console import progress
from utils.data import make_generator
from utils.pictures import as_uint8


def noise(n, latent_dim, num_classes, generator, kind="normal", labels=None):
    """(n, latent_dim) noise: N(0, 1), or uniform in [-1, 1] (the CS231n and Udacity lessons);
    with num_classes > 0 its first num_classes entries are the one-hot labels (n,)."""
    dev = generator.device
    if kind == "uniform":
        z = torch.rand(n, latent_dim, generator=generator, device=dev) * 2 - 1
    else:
        z = torch.randn(n, latent_dim, generator=generator, device=dev)
    if num_classes:
        z[:, :num_classes] = torch.nn.functional.one_hot(labels, num_classes).to(z.dtype)
    return z


def sample_noise(n, latent_dim, num_classes, generator, kind="normal"):
    """Random classes and their noise: (z (n, latent_dim), labels (n,)); with num_classes 0
    (an unconditional generator) plain noise and labels None."""
    labels = (torch.randint(0, num_classes, (n,), generator=generator, device=generator.device)
              if num_classes else None)
    return noise(n, latent_dim, num_classes, generator, kind, labels), labels


def fixed_noise(num_classes, latent_dim, seed, device, per_class=10, kind="normal"):
    """The grid's noise, drawn once: image i has class i % num_classes, so column c is class c;
    for an unconditional generator 100 draws (and labels None)."""
    g = make_generator("cpu", seed, "fixed_noise")
    if not num_classes:
        return noise(100, latent_dim, 0, g, kind).to(device), None
    labels = torch.arange(num_classes).repeat(per_class)
    z = noise(len(labels), latent_dim, num_classes, g, kind, labels)
    return z.to(device), labels.to(device)


def conditioning(ckpt):
    """(how many classes a generator is conditioned on, 0 for none; its noise) from its file."""
    settings = ckpt["settings"]
    classes = len(ckpt["classes"]) if settings.get("acgan", "on") == "on" else 0
    return classes, settings.get("noise", "normal")


@torch.no_grad()
def sample_generator(G, n, num_classes, seed, device, kind="normal", batch_size=250):
    """n samples of G as uint8 (n, C, S, S) and their classes (balanced: i % num_classes) or
    None for an unconditional generator."""
    G = G.to(device).eval()
    g, out = make_generator(device, seed, "metrics"), []
    labels = torch.arange(n) % num_classes if num_classes else None
    for start in progress(range(0, n, batch_size), -(-n // batch_size), "samples"):
        part = None if labels is None else labels[start:start + batch_size].to(device)
        count = min(batch_size, n - start)
        out.append(as_uint8(G(noise(count, G.latent_dim, num_classes, g, kind, part))))
    return torch.cat(out), labels
