"""Which pixels a discriminator's class decision rests on, by captum (the maintained library):
the saliency (the input gradient's magnitude), integrated gradients (Sundararajan et al. 2017,
from a grey image, in batches of --ig_batch so memory stays bounded) and Grad-CAM (Selvaraju
et al. 2017) at a chosen block, for test images, each toward the class the model predicts.

    python visualize.py attribute --n_images 8 --gradcam_layer 6
"""
import torch

from utils.cli import UserError, info
from utils.pictures import save_grid, to_unit


def logits_of(model):
    return lambda x: model(x)[1]


def attributions(model, x, target, ig_steps=32, ig_batch=64, layer=None):
    """(saliency, integrated gradients, Grad-CAM upsampled, IG's completeness error), each
    (B, 1, S, S) but IG (B, C, S, S) and the error (B,): IG's sum minus (F(x) - F(grey))."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    forward = logits_of(model)
    x = x.detach().clone().requires_grad_(True)  # captum warns when it has to do this itself
    saliency = Saliency(forward).attribute(x, target=target, abs=True).amax(1, keepdim=True)
    ig, error = IntegratedGradients(forward).attribute(
        x, baselines=torch.zeros_like(x), target=target, n_steps=ig_steps,
        internal_batch_size=ig_batch, return_convergence_delta=True)
    block = model.blocks[(layer or model.depth) - 1]
    cam = LayerGradCam(forward, block).attribute(x, target=target, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return saliency, ig, cam, error


def _unit(a):
    """Each map scaled to [0, 1] on its own: (B, C, S, S)."""
    flat = a.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    return (a - low[:, None, None, None]) / (high - low).clamp(min=1e-12)[:, None, None, None]


def run_attribute(ctx):
    args = ctx.args
    names = ctx.with_class_head("attribute")
    x, y = ctx.batch()
    x, y = x[:args.n_images], y[:args.n_images]
    for name in names:
        model, _ = ctx.model(name)
        if args.gradcam_layer and args.gradcam_layer > model.depth:
            raise UserError(f"--gradcam_layer {args.gradcam_layer}: the {name} discriminator "
                            f"has layers 1 to {model.depth}")
        with torch.no_grad():
            pred = model(x)[1].argmax(1)
        saliency, ig, cam, error = attributions(model, x, pred, args.ig_steps, args.ig_batch,
                                                args.gradcam_layer)
        grey = lambda a: _unit(a).expand(-1, x.shape[1], -1, -1)  # noqa: E731
        picture = to_unit(x)
        overlay = picture * 0.4 + 0.6 * _unit(cam).expand_as(picture) * torch.tensor(
            [1.0, 0.3, 0.1][:x.shape[1]] if x.shape[1] == 3 else [1.0]).view(1, -1, 1, 1)
        columns = torch.stack([picture, grey(saliency), grey(ig.abs().sum(1, keepdim=True)),
                               overlay.clamp(0, 1)], 1)  # (B, 4, C, S, S)
        made = f"attributions_{name}.png"
        save_grid(columns.flatten(0, 1), ctx.out(made), nrow=4,
                  labels=["image", "saliency", "int. grad.", "Grad-CAM"])
        relative = (error.abs() / (ig.flatten(1).sum(1).abs() + error.abs()).clamp(min=1e-6))
        info(f"attribute {name}: integrated gradients' completeness error "
             f"{error.abs().max().item():.3g} at most ({relative.max().item() * 100:.2f}% of the "
             f"logit change), {args.ig_steps} steps")
        ctx.record(f"attributions_{name}", dict(
            predicted=pred.tolist(), labels=y.tolist(), ig_steps=args.ig_steps,
            completeness_error=error.abs().max().item(),
            gradcam_layer=args.gradcam_layer or model.depth), files=[made], uses=[name])
