"""Does a max-class image show its class, or only exploit one network's quirks? One that shows
it is given that class by other networks too (the other discriminator, any --judges): the
transfer rate of the assignment's ascent and of lucid's (fft, robust), for each discriminator.

    python visualize.py transfer --judges runs/seed1/cifar10.model
"""
import torch

from utils.console import info
from utils.figures.ascent import class_images
from utils.pictures import save_grid, to_unit

METHODS = {"pixel": "the assignment's ascent", "fft": "lucid's (fft, robust)"}


@torch.no_grad()
def rate(judge, images, n):
    """The share (%) of images (copy-major: image i is of class i % n) judged their class."""
    target = torch.arange(len(images), device=images.device) % n
    return (judge(images)[1].argmax(1) == target).float().mean().item() * 100


def run_transfer(ctx):
    names = ctx.with_class_head("transfer")
    if not names:
        return None
    # name -> (model, classes): the chosen discriminators, and the --judges by their paths
    judges = {name: (ctx.model(name)[0], ctx.classes(name)) for name in names}
    judges.update({ctx.paths[j]: (ctx.model(j)[0], ctx.classes(j)) for j in ctx.judges})
    results, made = {}, []
    for name in names:
        classes, results[name], rows = ctx.classes(name), {}, []
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
        save_grid(to_unit(torch.cat(rows)), ctx.out(made[-1]), nrow=len(classes), labels=classes)
    ctx.record("transfer", dict(rates=results, judges=list(judges)), files=made,
               uses=names + ctx.judges)
    return results
