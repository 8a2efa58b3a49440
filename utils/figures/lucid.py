"""Feature images a person can read (Olah et al. 2017, "Feature Visualization"; Lucid and
lucent): an image held as Fourier coefficients scaled by 1/f in decorrelated colours,
transforms at every step that a real object survives and a quirk of one network does not
(sized for 32-pixel images: lucent's, made for 224 pixels, blur them), and several images per
objective pushed apart (a Gram-matrix diversity term).

    python visualize.py max-class --param fft --robust on
    python visualize.py max-features --param fft --robust on --diversity 0.1 --copies 4
"""
import math

import torch
import torch.nn.functional as F

from utils.console import progress
from utils.data import make_generator, to_float


def colour_matrix(images, n=10000, seed=0):
    """The square root of the training pixels' colour covariance, (C, C): colour = M @ z turns
    decorrelated z of unit variance into colours that vary as the data's do. images: uint8
    (N, C, S, S), n of them drawn at random (a folder copy is stored class by class)."""
    if len(images) > n:
        pick = torch.randperm(len(images), generator=make_generator("cpu", seed, "colour"))[:n]
        images = images[pick.sort().values]
    x = to_float(images).permute(1, 0, 2, 3).flatten(1)  # (C, pixels) in [-1, 1]
    vals, vecs = torch.linalg.eigh(torch.cov(x.double()).reshape(len(x), len(x)))
    return (vecs @ torch.diag(vals.clamp(min=1e-8).sqrt()) @ vecs.T).float()


def frequencies(height, width):
    """|f| of each coefficient of an rfft2 of that size, (H, W // 2 + 1)."""
    fy, fx = torch.fft.fftfreq(height)[:, None], torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx ** 2 + fy ** 2)


class FourierImage(torch.nn.Module):
    """n images held as their spectrum, each coefficient scaled by 1 / max(|f|, 1 / size) so
    that gradient steps move every frequency about as much (natural images fall off as 1/f),
    then coloured by the decorrelation matrix and squashed by tanh into (-1, 1)."""

    def __init__(self, n, channels, height, width, colour, generator=None, std=0.01):
        super().__init__()
        self.shape = (n, channels, height, width)
        self.register_buffer("scale", 1.0 / frequencies(height, width).clamp(
            min=1.0 / max(height, width)))
        self.register_buffer("colour", colour)
        spectrum = torch.randn(n, channels, height, width // 2 + 1, 2, generator=generator)
        self.spectrum = torch.nn.Parameter(spectrum * std)

    def forward(self):
        h, w = self.shape[2:]
        coefficients = torch.view_as_complex(self.spectrum) * self.scale
        z = torch.fft.irfft2(coefficients, s=(h, w), norm="ortho")  # decorrelated, (n, c, h, w)
        return torch.tanh(torch.einsum("ij,njhw->nihw", self.colour, z))

    @torch.no_grad()
    def set_image(self, x):
        """The parameters that give the images x (in (-1, 1)): forward() inverted."""
        z = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.colour),
                         torch.atanh(x.clamp(-1 + 1e-6, 1 - 1e-6)))
        coefficients = torch.fft.rfft2(z, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(coefficients))


def robust(x, generator, pad=2, jitter=2, scales=(0.95, 1.05), degrees=5.0):
    """The transformations a real feature survives, at the scale of a 32-pixel image, drawn per
    image from generator: a shift of up to `jitter` pixels on a padded canvas, a scale and a
    rotation of a few degrees (bilinear, differentiable), then cropped back."""
    n, _, h, w = x.shape
    dev = generator.device
    u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
    x = F.pad(x, [pad] * 4, mode="reflect")
    angle = (u(n) * 2 - 1) * math.radians(degrees)
    scale = scales[0] + u(n) * (scales[1] - scales[0])
    shift = (u(n, 2) * 2 - 1) * (2 * jitter / (h + 2 * pad))  # in grid units of the canvas
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (n, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="reflection",
                      align_corners=False)
    return x[..., pad:pad + h, pad:pad + w]


def diversity(activations, copies):
    """Lucent's diversity term: the mean cosine similarity of the Gram matrices of the images
    that share an objective (copies of each, images ordered copy-major); to be minimised."""
    if copies < 2:
        return activations.new_zeros(())
    b = activations.shape[0]
    a = activations.flatten(2)  # (B, C, positions)
    gram = F.normalize((a @ a.transpose(1, 2)).flatten(1), dim=1)  # (B, C * C)
    gram = gram.view(copies, b // copies, -1)  # (copies, objectives, C * C)
    sim = torch.einsum("iod,jod->oij", gram, gram)  # (objectives, copies, copies)
    off = ~torch.eye(copies, dtype=torch.bool, device=sim.device)
    return sim[:, off].mean()


def fft_ascent(score, n, shape, colour, steps=200, lr=0.005, robust_on=True, copies=1,
               weight=0.0, seed=0, key="lucid", desc="fft ascent"):
    """Images (B, C, H, W) that maximise score(x) -> (per-image objective (B,), activations or
    None), stepped by Adam in Fourier space; n objectives, `copies` images each (copy-major),
    pushed apart by `weight` x the diversity term; every draw comes from (seed, key, step)."""
    c, h, w = shape
    image = FourierImage(n * copies, c, h, w, colour,  # drawn on the CPU, the same everywhere
                         generator=make_generator("cpu", seed, key, "start")).to(colour.device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    bar = progress(range(steps), steps, desc)
    for step in bar:
        x = image()
        if robust_on:
            x = robust(x, make_generator("cpu", seed, key, step))
        value, acts = score(x)
        loss = -value.float().mean()
        if weight and acts is not None:
            loss = loss + weight * diversity(acts.float(), copies)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix_str(f"objective {value.mean().item():.4g}")
    with torch.no_grad():
        return image()
