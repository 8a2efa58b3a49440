"""Perturbed real images (the assignment's Part 2, first figure): the input gradient of the
cross-entropy toward label + 1, each pixel moved --gain 8-bit levels against its sign, and the
accuracy before and after, also as a curve over the gain."""
import torch
import torch.nn.functional as F

from utils.console import info
from utils.figures.context import style_axes
from utils.pictures import pyplot, save_grid, save_plot, to_unit

LEVEL = 2 / 255  # one 8-bit level in the [-1, 1] range


def input_gradient(model, x, target):
    """d CE(fc10(x), target) / dx, per image (the losses are summed, not averaged)."""
    x = x.detach().requires_grad_(True)
    _, logits = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), x)
    return grad


@torch.no_grad()
def classify(model, x, y, alt):
    """Accuracy (%) on y, how often (%) alt is predicted, and the mean probability of alt."""
    logits = model(x)[1].float()
    pred = logits.argmax(1)
    p_alt = logits.softmax(1).gather(1, alt[:, None]).mean()
    return ((pred == y).float().mean().item() * 100, (pred == alt).float().mean().item() * 100,
            p_alt.item())


def perturb(model, x, y, gain, num_classes=10, grad=None):
    """Move each pixel gain levels against the sign of the gradient (grad, when computed
    before for the same x) toward label y+1: (gradient, altered images in [-1, 1], figures
    before/after)."""
    alt = (y + 1) % num_classes
    grad = input_gradient(model, x, alt) if grad is None else grad
    altered = (x - gain * LEVEL * grad.sign()).clamp(-1, 1)
    before, after = classify(model, x, y, alt), classify(model, altered, y, alt)
    return grad, altered, dict(acc_before=before[0], acc_after=after[0], alt_before=before[1],
                               alt_after=after[1], p_alt_before=before[2], p_alt_after=after[2])


def gain_curve(model, x, y, grad, max_gain, num_classes=10):
    """The perturbation's figures at gains 0..max_gain, from one gradient."""
    return [dict(gain=k, **perturb(model, x, y, float(k), num_classes, grad)[2])
            for k in range(max_gain + 1)]


def run_perturb(ctx):
    opts = ctx.options
    names = ctx.with_class_head("perturb")
    if not names:
        return
    x, y = ctx.batch()
    save_grid(to_unit(x), ctx.out("real_images.png"))
    for name in names:
        model, _ = ctx.model(name)
        num_classes = len(ctx.classes(name))
        with ctx.runtime.autocast():
            grad, altered, figures = perturb(model, x, y, opts.gain, num_classes)
            curve = gain_curve(model, x, y, grad, opts.max_gain, num_classes)
        g = grad.detach()
        made = ["real_images.png", f"gradient_image_{name}.png",
                f"altered_images_{name}{ctx.suffix('gain')}.png", f"perturb_gain_{name}.png"]
        save_grid((g - g.min()) / (g.max() - g.min()).clamp(min=1e-12), ctx.out(made[1]))
        save_grid(to_unit(altered), ctx.out(made[2]))
        plot_gain_curve(curve, ctx.out(made[3]), name)
        info(f"perturb {name}: accuracy {figures['acc_before']:.1f}% -> "
             f"{figures['acc_after']:.1f}% at gain {opts.gain:g}; predicted label+1 "
             f"{figures['alt_before']:.1f}% -> {figures['alt_after']:.1f}%")
        ctx.record(f"perturb_{name}", dict(gain=opts.gain, **figures, curve=curve),
                   files=made, uses=[name])


def plot_gain_curve(curve, path, name):
    fig, ax = pyplot().subplots(figsize=(5, 3.2))
    gains = [c["gain"] for c in curve]
    ax.plot(gains, [c["acc_after"] for c in curve], marker=".", label="accuracy on the true label")
    ax.plot(gains, [c["alt_after"] for c in curve], marker=".", label="predicted label + 1")
    style_axes(ax, f"{name} discriminator: perturbation toward label + 1",
               "gain (8-bit levels per pixel)", "% of the batch", percent=True)
    fig.tight_layout()
    save_plot(fig, path)
