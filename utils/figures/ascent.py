"""Gradient ascent on the input (the assignment's Part 2): images that maximise each class
output (max-class) and each feature of a layer (max-features), with the optional regularisers
of Yosinski et al. 2015 (jitter, blur)."""
import time

import torch

from utils.cli import info, progress
from utils.data import make_generator
from utils.pictures import save_grid, to_unit


def ascend(objective, x0, steps=200, lr=0.1, weight_decay=0.001, jitter=0, blur_every=0,
           blur_sigma=0.5, generator=None, desc="ascent"):
    """Gradient ascent on the input, each image on its own objective(x)[i].

    The assignment's update: x += lr * grad - weight_decay * x * |x|, clamped to [-1, 1].
    Optional regularisers (Yosinski et al. 2015): a random shift of up to `jitter` pixels
    before each step, and a Gaussian blur every `blur_every` steps. A progress bar (on a
    terminal) shows the mean objective every 10 steps.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    x = x0.detach().clone()
    bar = progress(range(steps), steps, desc)
    for step in bar:
        dx = dy = 0
        if jitter:
            dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        xs = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        value = objective(xs).float()
        (grad,) = torch.autograd.grad(value.sum(), xs)
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix_str(f"objective {value.mean().item():.4g}")
        grad = torch.roll(grad, (-dy, -dx), (2, 3))
        x = x + lr * grad - weight_decay * x * x.abs()
        if blur_every and (step + 1) % blur_every == 0:
            k = 2 * max(1, round(3 * blur_sigma)) + 1
            x = gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
        x = x.clamp(-1, 1)
    return x.detach()


def own_class_logit(model):
    return lambda x: model(x)[1].diagonal().float()  # image i's logit of class i


def own_feature(model, layer):
    return lambda x: model.features(x, layer).diagonal().float()  # image i's feature i


def max_class(model, mean_image, num_classes, **ascent):
    """One copy of the mean image per class, each pushed up its own class logit."""
    x0 = mean_image.expand(num_classes, -1, -1, -1)
    objective = own_class_logit(model)
    with torch.no_grad():
        start = objective(x0)
    x = ascend(objective, x0, desc="max-class", **ascent)
    with torch.no_grad():
        end, pred = objective(x), model(x)[1].argmax(1)
    return x, start, end, pred


def max_features(model, mean_image, layer, n, **ascent):
    """One copy of the mean image per feature of `layer` (the first n), each pushed up its own."""
    with torch.no_grad():
        n = min(n, model.features(mean_image, layer).shape[1])
    x0 = mean_image.expand(n, -1, -1, -1)
    objective = own_feature(model, layer)
    with torch.no_grad():
        start = objective(x0)
    x = ascend(objective, x0, desc=f"max-features layer {layer}", **ascent)
    with torch.no_grad():
        end = objective(x)
    return x, start, end


def ascent_options(args, generator=None):
    return dict(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, jitter=args.jitter,
                blur_every=args.blur_every, blur_sigma=args.blur_sigma, generator=generator)


def run_max_class(ctx):
    args = ctx.args
    x, _ = ctx.batch()
    mean = x.mean(0, keepdim=True)
    tag = ctx.suffix("steps", "lr", "weight_decay", "jitter", "blur_every", "blur_sigma")
    for name in ctx.with_class_head("max-class"):
        model, _ = ctx.model(name)
        classes = ctx.classes(name)
        g = make_generator("cpu", args.seed, "jitter", name)
        with ctx.runtime.autocast():
            images, start, end, pred = max_class(model, mean, len(classes),
                                                 **ascent_options(args, g))
        made = f"max_class_{name}{tag}.png"
        save_grid(to_unit(images), ctx.out(made), nrow=len(classes), labels=classes)
        hits = (pred == torch.arange(len(classes), device=pred.device)).tolist()
        for c, (s, e, ok) in enumerate(zip(start.tolist(), end.tolist(), hits)):
            info(f"max-class {name} {classes[c]:>10}: logit {s:7.2f} -> {e:7.2f}, "
                 f"classified as {classes[c] if ok else classes[pred[c]]}")
        ctx.record(f"max_class_{name}{tag}", dict(start=start.tolist(), end=end.tolist(),
                                                  hits=hits, classes=classes),
                   files=[made], uses=[name])


def run_max_features(ctx):
    args = ctx.args
    x, _ = ctx.batch()
    mean = x.mean(0, keepdim=True)
    tag = ctx.suffix("steps", "lr", "weight_decay", "jitter", "blur_every", "blur_sigma",
                 "n_features")
    for name in ctx.names:
        model, _ = ctx.model(name)
        for layer in ctx.layers(name):
            t0 = time.time()
            g = make_generator("cpu", args.seed, "jitter", name, layer)
            with ctx.runtime.autocast():
                images, start, end = max_features(model, mean, layer, args.n_features,
                                                  **ascent_options(args, g))
            made = f"max_features_{name}_layer{layer}{tag}.png"
            save_grid(to_unit(images), ctx.out(made))
            raised = (end > start).float().mean().item() * 100
            info(f"max-features {name} layer {layer}: mean feature {start.mean():.3f} -> "
                 f"{end.mean():.3f}, raised for {raised:.0f}% of {len(end)} "
                 f"({time.time() - t0:.1f}s)")
            ctx.record(f"max_features_{name}_layer{layer}{tag}",
                       dict(layer=layer, start_mean=start.mean().item(),
                            end_mean=end.mean().item(), raised_pct=raised),
                       files=[made], uses=[name])
