"""Which pixels a discriminator's class decision rests on, by captum: saliency, integrated
gradients (Sundararajan et al. 2017, from a grey image) and Grad-CAM (Selvaraju et al. 2017) at
a chosen block, for test images, each toward the class the model predicts.

    python visualize.py attribute --n_images 8 --gradcam_layer 6
"""
import torch

from utils.console import info
from utils.errors import UserError
from utils.pictures import save_grid, to_unit


def spatial_layers(model, x):
    """The blocks (1-based) whose output is a map (B, C, h, w), where Grad-CAM can look."""
    found, h = [], x[:1]
    with torch.no_grad():
        for i, block in enumerate(model.blocks, 1):
            h = block(h)
            if h.dim() == 4:
                found.append(i)
    return found


def gradcam_layer(ctx, name):
    """--gradcam_layer, or the last block with a map; None where the network has none."""
    model, (x, _) = ctx.model(name)[0], ctx.batch()
    maps = spatial_layers(model, x)
    layer = ctx.options.gradcam_layer
    if layer is None:
        return maps[-1] if maps else None
    if layer > model.depth:
        raise UserError(f"--gradcam_layer {layer}: the {name} discriminator has layers 1 to "
                        f"{model.depth}")
    if layer not in maps:
        raise UserError(f"--gradcam_layer {layer}: the {name} discriminator's layer {layer} "
                        "gives a vector, not a map; Grad-CAM needs one of layers "
                        f"{', '.join(map(str, maps)) or '(none: this network has no map)'}")
    return layer


def check_gradcam_layer(ctx):
    for name in ctx.names:
        if ctx.model(name)[0].num_classes:
            gradcam_layer(ctx, name)


def attributions(model, x, target, ig_steps=32, ig_batch=64, layer=None):
    """(saliency, integrated gradients, Grad-CAM upsampled at block `layer` (None: no
    Grad-CAM), IG's completeness error), each (B, 1, S, S) but IG (B, C, S, S) and the error
    (B,): IG's sum minus (F(x) - F(grey))."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    forward = lambda x: model(x)[1]  # noqa: E731
    x = x.detach().clone().requires_grad_(True)  # captum warns when it has to do this itself
    saliency = Saliency(forward).attribute(x, target=target, abs=True).amax(1, keepdim=True)
    ig, error = IntegratedGradients(forward).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=ig_steps,
        internal_batch_size=ig_batch, return_convergence_delta=True)
    cam = None
    if layer is not None:
        cam = LayerGradCam(forward, model.blocks[layer - 1]).attribute(
            x, target=target, relu_attributions=True)  # (B, 1, h, w)
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return saliency, ig, cam, error


def _unit(a):
    """Each map scaled to [0, 1] on its own: (B, C, S, S)."""
    flat = a.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    return (a - low[:, None, None, None]) / (high - low).clamp(min=1e-12)[:, None, None, None]


def run_attribute(ctx):
    opts = ctx.options
    names = ctx.with_class_head("attribute")
    x, y = ctx.batch()
    x, y = x[:opts.n_images], y[:opts.n_images]
    for name in names:
        model, _ = ctx.model(name)
        layer = gradcam_layer(ctx, name)
        if layer is None:
            info(f"attribute {name}: no Grad-CAM (no block of this network gives a map)")
        with torch.no_grad():
            pred = model(x)[1].argmax(1)
        saliency, ig, cam, error = attributions(model, x, pred, opts.ig_steps, opts.ig_batch,
                                                layer)
        grey = lambda a: _unit(a).expand(-1, x.shape[1], -1, -1)  # noqa: E731
        picture = to_unit(x)
        columns = [picture, grey(saliency), grey(ig.abs().sum(1, keepdim=True))]
        labels = ["image", "saliency", "int. grad.", "Grad-CAM"][:3 + (cam is not None)]
        if cam is not None:  # the map in red over the faded image
            tint = torch.tensor([1.0, 0.3, 0.1][:x.shape[1]] if x.shape[1] == 3 else [1.0],
                                device=x.device).view(1, -1, 1, 1)
            overlay = picture * 0.4 + 0.6 * _unit(cam).expand_as(picture) * tint
            columns.append(overlay.clamp(0, 1))
        made = f"attributions_{name}.png"
        save_grid(torch.stack(columns, 1).flatten(0, 1), ctx.out(made),  # (B * columns, C, S, S)
                  nrow=len(columns), labels=labels)
        relative = (error.abs() / (ig.flatten(1).sum(1).abs() + error.abs()).clamp(min=1e-6))
        info(f"attribute {name}: integrated gradients' completeness error "
             f"{error.abs().max().item():.3g} at most ({relative.max().item() * 100:.2f}% of the "
             f"logit change), {opts.ig_steps} steps")
        ctx.record(f"attributions_{name}", dict(
            predicted=pred.tolist(), labels=y.tolist(), ig_steps=opts.ig_steps,
            completeness_error=error.abs().max().item(),
            gradcam_layer=layer), files=[made], uses=[name])
