"""Stronger attacks beside the assignment's one signed step: the accuracy of both
discriminators against PGD's budget (Madry et al. 2018) on one plot, and the logits along the
adversarial direction from -10 to +10 times the perturbation's step for one image per model
(the linear path, Goodfellow et al. 2015, Fig. 2).

    python visualize.py attack --max_budget 16 --attack_steps 10
"""
import torch
import torch.nn.functional as F

from utils.console import info
from utils.figures.context import style_axes
from utils.figures.perturbation import LEVEL, input_gradient
from utils.pictures import pyplot, save_plot


def pgd(model, x, y, budget, steps=10, step_size=None):
    """Untargeted PGD in L-infinity: `steps` signed gradient steps on the cross-entropy of the
    true class, each image kept within budget (in [-1, 1] units) of itself and in [-1, 1]."""
    if budget <= 0 or steps < 1:
        return x.detach()
    step_size = step_size or 2.5 * budget / steps
    adv = x.detach().clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv)[1].float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + step_size * grad.sign()
        adv = torch.min(torch.max(adv, x - budget), x + budget).clamp(-1, 1)
    return adv.detach()


@torch.no_grad()
def accuracy(model, x, y):
    return (model(x)[1].argmax(1) == y).float().mean().item() * 100


def budget_curve(model, x, y, max_budget, steps):
    """Accuracy (%) under PGD at budgets 0..max_budget 8-bit levels."""
    return [accuracy(model, pgd(model, x, y, k * LEVEL, steps), y) for k in range(max_budget + 1)]


@torch.no_grad()
def linear_path(model, x, y, gain=8.0, span=10, points=41):
    """The logits (points, classes) of x + t * gain levels * sign(gradient toward y + 1), for t
    from -span to +span: how linear the model is along the adversarial direction."""
    with torch.enable_grad():
        alt = (y + 1) % model.num_classes
        direction = -input_gradient(model, x, alt).sign() * gain * LEVEL
    t = torch.linspace(-span, span, points, device=x.device)
    path = (x + t[:, None, None, None] * direction).clamp(-1, 1)  # (points, C, S, S)
    return t, model(path)[1].float()


def plot_attack(curves, paths, classes, path):
    """Left: accuracy against the PGD budget for each model; then one linear-path panel each."""
    fig, axes = pyplot().subplots(1, 1 + len(paths), figsize=(5 * (1 + len(paths)), 3.6),
                                  squeeze=False)
    for name, curve in curves.items():
        axes[0, 0].plot(range(len(curve)), curve, marker=".", label=f"{name} discriminator")
    style_axes(axes[0, 0], "accuracy against the attack's budget",
               "budget (8-bit levels per pixel)", "test accuracy under PGD (%)", percent=True)
    for ax, (name, (t, logits, label)) in zip(axes[0, 1:], paths.items()):
        for c in range(logits.shape[1]):
            ax.plot(t.cpu(), logits[:, c].cpu(), lw=2.5 if c == label else 1,
                    label=classes[name][c] if c == label or c == (label + 1) % logits.shape[1]
                    else None)
        style_axes(ax, f"{name}: logits along the adversarial direction",
                   "multiples of the perturbation's step", "logit", legend=7)
    fig.tight_layout()
    save_plot(fig, path)


def run_attack(ctx):
    opts = ctx.options
    names = ctx.with_class_head("attack")
    if not names:
        return None
    x, y = ctx.batch()
    curves, paths, classes, figures = {}, {}, {}, {}
    for name in names:
        model, _ = ctx.model(name)
        curves[name] = budget_curve(model, x, y, opts.max_budget, opts.attack_steps)
        paths[name] = (*linear_path(model, x[:1], y[:1], opts.gain), int(y[0]))  # (t, logits, y)
        classes[name] = ctx.classes(name)
        figures[name] = dict(pgd_curve=curves[name], steps=opts.attack_steps)
        info(f"attack {name}: accuracy {curves[name][0]:.1f}% clean, "
             f"{curves[name][min(8, opts.max_budget)]:.1f}% under PGD at "
             f"{min(8, opts.max_budget)} levels ({opts.attack_steps} steps)")
    made = "attack.png"
    plot_attack(curves, paths, classes, ctx.out(made))
    ctx.record("attack", dict(models=figures, max_budget=opts.max_budget), files=[made],
               uses=names)
    return {name: f["pgd_curve"][-1] for name, f in figures.items()}
