"""Gradient ascent on the input (the assignment's Part 2): images that maximise each class
output (max-class) and each feature of a layer (max-features), with the optional regularisers
of Yosinski et al. 2015 (jitter, blur)."""
import time

import torch

from utils.console import info, progress
from utils.data import make_generator
from utils.figures.lucid import fft_ascent, robust
from utils.pictures import save_grid, to_unit


def ascend(objective, x0, steps=200, lr=0.1, weight_decay=0.001, jitter=0, blur_every=0,
           blur_sigma=0.5, generator=None, desc="ascent", robust_key=None):
    """Gradient ascent on the input, each image on its own objective(x)[i]: the assignment's
    x += lr * grad - weight_decay * x * |x|, clamped to [-1, 1]. Optional regularisers (Yosinski
    et al. 2015): a random shift of up to `jitter` pixels before each step, a Gaussian blur every
    `blur_every` steps; robust_key (seed, name): lucid.robust's transforms, drawn per step."""
    from torchvision.transforms.v2.functional import gaussian_blur

    x = x0.detach().clone()
    bar = progress(range(steps), steps, desc)
    for step in bar:
        dx = dy = 0
        if jitter:
            dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        xs = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        seen = xs if robust_key is None else robust(xs, make_generator("cpu", *robust_key, step))
        value = objective(seen).float()
        (grad,) = torch.autograd.grad(value.sum(), xs)
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix_str(f"objective {value.mean().item():.4g}")
        grad = torch.roll(grad, (-dy, -dx), (2, 3))
        x = x + lr * grad - weight_decay * x * x.abs()
        if blur_every and (step + 1) % blur_every == 0:
            # a radius of 3 sigma, less than the image's side (reflection needs no more)
            k = 2 * min(max(1, round(3 * blur_sigma)), min(x.shape[-2:]) - 1) + 1
            x = gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
        x = x.clamp(-1, 1)
    return x.detach()


def own_class_logit(model):
    return lambda x: model(x)[1].diagonal().float()  # image i's logit of class i


def own_feature(model, layer):
    return lambda x: model.features(x, layer).diagonal().float()  # image i's feature i


def activations(model, x, layer=None):
    """The output of block `layer` (default the last), (B, C, h, w) (a vector made (B, C, 1, 1))
    and what the heads read."""
    h = x
    for block in model.blocks[:layer]:
        h = block(h)
    return h if h.dim() == 4 else h[..., None, None]


def class_score(model, num_classes):
    """score(x) -> (image i's logit of class i % num_classes, the last block's activations)."""
    def score(x):
        h = activations(model, x)
        logits = model.fc10(model.trunk(h))  # a vector's (B, C, 1, 1) flattens back
        i = torch.arange(len(x), device=x.device)
        return logits[i, i % num_classes], h
    return score


def feature_score(model, layer, n):
    """score(x) -> (image i's feature i % n of `layer`, max-pooled; the layer's activations)."""
    def score(x):
        h = activations(model, x, layer)
        i = torch.arange(len(x), device=x.device)
        return h.amax(dim=(2, 3))[i, i % n], h
    return score


def lucid_options(ctx, robust=None):
    """The --param fft ascent's settings, and the training set's colour matrix."""
    a = ctx.options
    return dict(colour=ctx.colour().to(ctx.device), steps=a.steps, lr=a.fft_lr,
                robust_on=(robust or a.robust) == "on", copies=a.copies, weight=a.diversity,
                seed=a.seed)


def class_images(ctx, name, method=None, robust=None):
    """The max-class images of one discriminator by a method ('pixel': the assignment's ascent
    from the mean test image; 'fft': lucid's): (images, start logits or None, end logits,
    predicted classes). Images are copy-major: image i is of class i % classes."""
    model, (x, _) = ctx.model(name)[0], ctx.batch()
    n = len(ctx.classes(name))
    if (method or ctx.options.param) == "fft":
        options = lucid_options(ctx, robust)
        with ctx.runtime.autocast():
            images = fft_ascent(class_score(model, n), n, tuple(x.shape[1:]),
                                key=("max-class", name), desc="max-class (fft)", **options)
            with torch.no_grad():
                end, pred = class_score(model, n)(images)[0], model(images)[1].argmax(1)
        return images, None, end, pred
    options = pixel_options(ctx, name, robust=robust)
    with ctx.runtime.autocast():
        return max_class(model, x.mean(0, keepdim=True), n, **options)


def climb(objective, x0, desc, **ascent):
    """(the objective at x0, the images ascended from x0, the objective there)."""
    with torch.no_grad():
        start = objective(x0)
    x = ascend(objective, x0, desc=desc, **ascent)
    with torch.no_grad():
        return start, x, objective(x)


def max_class(model, mean_image, num_classes, **ascent):
    """One copy of the mean image per class, each pushed up its own class logit."""
    x0 = mean_image.expand(num_classes, -1, -1, -1)
    start, x, end = climb(own_class_logit(model), x0, "max-class", **ascent)
    with torch.no_grad():
        return x, start, end, model(x)[1].argmax(1)


def max_features(model, mean_image, layer, n, **ascent):
    """One copy of the mean image per feature of `layer` (the first n), each pushed up its own."""
    with torch.no_grad():
        n = min(n, model.features(mean_image, layer).shape[1])
    x0 = mean_image.expand(n, -1, -1, -1)
    start, x, end = climb(own_feature(model, layer), x0, f"max-features layer {layer}", **ascent)
    return x, start, end


def pixel_options(ctx, *key, robust=None):
    """The pixel ascent's settings; key (name, layer) names its jitter's and robustness's draws."""
    a = ctx.options
    options = dict(steps=a.steps, lr=a.lr, weight_decay=a.weight_decay, jitter=a.jitter,
                   blur_every=a.blur_every, blur_sigma=a.blur_sigma,
                   generator=make_generator("cpu", a.seed, "jitter", *key))
    if (robust or a.robust) == "on":
        options["robust_key"] = (a.seed, "robust", *key)
    return options


TAGS = ("steps", "lr", "weight_decay", "jitter", "blur_every", "blur_sigma", "param",
        "robust", "diversity", "copies", "fft_lr")  # settings that name a variant's files


def run_max_class(ctx):
    tag = ctx.suffix(*TAGS)
    for name in ctx.with_class_head("max-class"):
        classes = ctx.classes(name)
        images, start, end, pred = class_images(ctx, name)
        made = f"max_class_{name}{tag}.png"
        save_grid(to_unit(images), ctx.out(made), nrow=len(classes), labels=classes)
        target = torch.arange(len(pred), device=pred.device) % len(classes)
        hits = (pred == target).tolist()
        for i, (e, ok) in enumerate(zip(end.tolist(), hits)):
            s = f"{start[i].item():7.2f} -> " if start is not None else ""
            c = i % len(classes)
            info(f"max-class {name} {classes[c]:>10}: logit {s}{e:7.2f}, "
                 f"classified as {classes[c] if ok else classes[pred[i]]}")
        ctx.record(f"max_class_{name}{tag}",
                   dict(start=None if start is None else start.tolist(), end=end.tolist(),
                        hits=hits, classes=classes, param=ctx.options.param),
                   files=[made], uses=[name])


def run_max_features(ctx):
    opts = ctx.options
    x, _ = ctx.batch()
    mean = x.mean(0, keepdim=True)
    tag = ctx.suffix(*TAGS, "n_features")
    for name in ctx.names:
        model, _ = ctx.model(name)
        for layer in ctx.layers(name):
            t0 = time.time()
            with ctx.runtime.autocast():
                if opts.param == "fft":
                    with torch.no_grad():
                        n = min(opts.n_features, model.features(mean, layer).shape[1])
                    score = feature_score(model, layer, n)
                    images = fft_ascent(score, n, tuple(mean.shape[1:]),
                                        key=("max-features", name, layer),
                                        desc=f"max-features layer {layer} (fft)",
                                        **lucid_options(ctx))
                    with torch.no_grad():  # from a grey image to the end
                        end, start = score(images)[0], score(torch.zeros_like(images))[0]
                else:
                    images, start, end = max_features(model, mean, layer, opts.n_features,
                                                      **pixel_options(ctx, name, layer))
            made = f"max_features_{name}_layer{layer}{tag}.png"
            copies = opts.copies if opts.param == "fft" else 1  # a row per copy
            save_grid(to_unit(images), ctx.out(made), nrow=len(images) // copies
                      if copies > 1 else 10)
            raised = (end > start).float().mean().item() * 100
            info(f"max-features {name} layer {layer}: mean feature {start.mean():.3f} -> "
                 f"{end.mean():.3f}, raised for {raised:.0f}% of {len(end)} "
                 f"({time.time() - t0:.1f}s)")
            ctx.record(f"max_features_{name}_layer{layer}{tag}",
                       dict(layer=layer, start_mean=start.mean().item(),
                            end_mean=end.mean().item(), raised_pct=raised),
                       files=[made], uses=[name])
