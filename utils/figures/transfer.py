"""Does a max-class image show its class, or only exploit one network's quirks? An image that
shows the class is given that class by other networks too (the other discriminator, and any
--judges, e.g. a classifier trained with another seed); one that exploits a quirk does not.
The transfer rate of the assignment's ascent and of lucid's (--param fft with transformation
robustness), side by side, for each discriminator.

    python visualize.py transfer --judges runs/seed1/cifar10.model
"""
import torch

from utils.console import info
from utils.figures.ascent import class_images
from utils.pictures import save_grid, to_unit

METHODS = {"pixel": "the assignment's ascent", "fft": "lucid's (fft, robust)"}


def judges_of(ctx, names):
    """name -> (model, classes): the chosen discriminators, and the --judges by their paths."""
    judges = {name: (ctx.model(name)[0], ctx.classes(name)) for name in names}
    judges.update({ctx.paths[j]: (ctx.model(j)[0], ctx.classes(j)) for j in ctx.judges})
    return judges


@torch.no_grad()
def rate(judge, images, n):
    """The share (%) of images (copy-major: image i is of class i % n) judged their class."""
    target = torch.arange(len(images), device=images.device) % n
    return (judge(images)[1].argmax(1) == target).float().mean().item() * 100


def run_transfer(ctx):
    names = ctx.with_class_head("transfer")
    if not names:
        return None
    judges = judges_of(ctx, names)
    results, made = {}, []
    for name in names:
        classes, results[name] = ctx.classes(name), {}
        rows = []
        for method in METHODS:
            images = class_images(ctx, name, method, robust="on" if method == "fft" else None)[0]
            rows.append(images[:len(classes)])
            results[name][method] = {
                other: rate(judge, images, len(classes))
                for other, (judge, their) in judges.items()
                if other != name and their == classes}
            for other, value in results[name][method].items():
                info(f"transfer {name} ({METHODS[method]}): {value:.0f}% judged their class by "
                     f"{other}")
        made.append(f"transfer_{name}.png")  # first row the assignment's, then lucid's
        save_grid(to_unit(torch.cat(rows)), ctx.out(made[-1]), nrow=len(classes),
                  labels=classes)
    ctx.record("transfer", dict(rates=results, judges=list(judges)), files=made,
               uses=names + ctx.judges)
    return results
