"""Part 2: what the two discriminators have learned, and the report.

    python visualize.py all                        # every figure for both models, then the PDF
    python visualize.py perturb --gain 4           # real / gradient / altered images
    python visualize.py max-class --model gan      # images maximising each class output
    python visualize.py max-features --layers 4 8 --jitter 2 --blur_every 4
    python visualize.py samples --classes cat ship --n_per_class 8
    python visualize.py report                     # gather everything into report.pdf
    python visualize.py all --run_dir runs/demo    # after `make demo`

The models are those the trainers wrote into --run_dir: cifar10.model (train_baseline.py, the
"baseline" discriminator, trained without the generator), discriminator.model and
generator.model (train_gan.py, the "gan" discriminator and its generator). Figures go to
--out_dir (default RUN_DIR/visualization), named by figure, model, layer and any setting that
differs from the assignment's, e.g. max_features_gan_layer4_jitter2.png. summary.json there
collects the figures' numbers, which the report quotes.
"""
import json
import os
import time

import torch
import torch.nn.functional as F

from checkpoints import load_model
from cli import (COUNT, INTEGER, NONNEGATIVE, POSITIVE, POSITIVE_INT, ArgumentParser, UserError,
                 info, run_main)
from data import load_dataset, make_generator, to_float
from pictures import save_grid, to_unit
from runtime import Runtime, add_speed_flags
from train_gan import class_noise, draw_noise

FIGURES = ("perturb", "max-class", "max-features", "samples", "export", "neighbours", "report",
           "all")
MODELS = {"baseline": ("cifar10.model", "train_baseline.py"),
          "gan": ("discriminator.model", "train_gan.py")}
LEVEL = 2 / 255  # one 8-bit level in the [-1, 1] range


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("figure", choices=FIGURES, help="which figure to make ('all' makes every one)")
    g = p.add_argument_group("models and data")
    g.add_argument("--run_dir", default=".", help="the folder the trainers wrote (their --out_dir)")
    g.add_argument("--out_dir", default=None,
                   help="where figures go (default RUN_DIR/visualization)")
    g.add_argument("--model", choices=("both", "baseline", "gan"), default="both",
                   help="which discriminator: baseline (cifar10.model), gan (discriminator.model)")
    g.add_argument("--baseline_model", default=None, help="default RUN_DIR/cifar10.model")
    g.add_argument("--gan_model", default=None, help="default RUN_DIR/discriminator.model")
    g.add_argument("--generator_model", default=None, help="default RUN_DIR/generator.model")
    g.add_argument("--dataset", default=None,
                   help="test images from this dataset (default: the one the model was trained on)")
    g.add_argument("--data_dir", default=None, help="its folder (default: the model's)")
    g.add_argument("--cache_dir", default=None, help="cache of decoded image folders")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=INTEGER, default=0, help="picks the test batch, noise and jitter")
    g.add_argument("--batch_size", type=POSITIVE_INT, default=100,
                   help="test images for perturb and the mean image")
    g = p.add_argument_group("perturb")
    g.add_argument("--gain", type=NONNEGATIVE, default=8.0,
                   help="8-bit levels each pixel moves against the gradient's sign")
    g.add_argument("--max_gain", type=COUNT, default=16, help="accuracy-vs-gain plot: gains 0..N")
    g = p.add_argument_group("max-class and max-features (gradient ascent on the input)")
    g.add_argument("--steps", type=POSITIVE_INT, default=200, help="ascent steps")
    g.add_argument("--lr", type=POSITIVE, default=0.1, help="step size on the input gradient")
    g.add_argument("--weight_decay", type=NONNEGATIVE, default=0.001,
                   help="x -= weight_decay * x * |x| each step, as the assignment")
    g.add_argument("--layers", type=POSITIVE_INT, nargs="+", default=[2, 3, 4, 6, 8],
                   help="max-features: layers to visualise (1..8 for the assignment's network)")
    g.add_argument("--n_features", type=POSITIVE_INT, default=100,
                   help="max-features: the first N features")
    g.add_argument("--jitter", type=COUNT, default=0,
                   help="regulariser: shift the image by up to N pixels each step (0: off)")
    g.add_argument("--blur_every", type=COUNT, default=0,
                   help="regulariser: Gaussian blur every N steps (0: off)")
    g.add_argument("--blur_sigma", type=POSITIVE, default=0.5, help="the blur's sigma in pixels")
    g = p.add_argument_group("samples")
    g.add_argument("--classes", nargs="+", default=["all"],
                   help="class names or indices (default all: one column each)")
    g.add_argument("--n_per_class", type=POSITIVE_INT, default=10, help="samples per class")
    g.add_argument("--interp_steps", type=POSITIVE_INT, default=10,
                   help="images in each class's interpolation row")
    g = p.add_argument_group("export")
    g.add_argument("--n", type=POSITIVE_INT, default=50000,
                   help="how many generated images to write as PNG files (50,000: what FID "
                        "and IS are reported on); into --out_dir, default RUN_DIR/export")
    g = p.add_argument_group("neighbours (an encoder from train_simclr.py)")
    g.add_argument("--encoder", default=None, help="default RUN_DIR/simclr.model")
    g.add_argument("--n_queries", type=POSITIVE_INT, default=8, help="test images, one row each")
    g.add_argument("--k", type=POSITIVE_INT, default=8,
                   help="nearest training images shown per test image")
    add_speed_flags(p, ("amp", "channels_last"))
    return p


# ----------------------------------------------------------------------------- the figures

def pick_test_batch(data, n, seed):
    """n test images chosen by the seed (the folder copy of CIFAR-10 is sorted by class)."""
    n = min(n, len(data.test_y))
    idx = torch.randperm(len(data.test_y), generator=make_generator("cpu", seed, "vis_batch"))[:n]
    return to_float(data.test_x[idx]), data.test_y[idx]


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
    """Move each pixel gain levels against the sign of the gradient toward label y+1.

    Returns the gradient, the altered images (clamped to [-1, 1]) and the figures before/after.
    A gradient computed before (for the same x) can be passed in.
    """
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


def ascend(objective, x0, steps=200, lr=0.1, weight_decay=0.001, jitter=0, blur_every=0,
           blur_sigma=0.5, generator=None):
    """Gradient ascent on the input, each image on its own objective(x)[i].

    The assignment's update: x += lr * grad - weight_decay * x * |x|, clamped to [-1, 1].
    Optional regularisers (Yosinski et al. 2015): a random shift of up to `jitter` pixels
    before each step, and a Gaussian blur every `blur_every` steps.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    x = x0.detach().clone()
    for step in range(steps):
        dx = dy = 0
        if jitter:
            dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        xs = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(xs).float().sum(), xs)
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
    x = ascend(objective, x0, **ascent)
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
    x = ascend(objective, x0, **ascent)
    with torch.no_grad():
        end = objective(x)
    return x, start, end


def class_indices(names, classes):
    """Class names or indices -> indices; 'all' -> every class."""
    if names in (["all"], None):
        return list(range(len(classes)))
    out = []
    for name in names:
        if name.isdigit() and int(name) < len(classes):
            out.append(int(name))
        elif name in classes:
            out.append(classes.index(name))
        else:
            raise UserError(f"no class '{name}'; the classes are {', '.join(classes)}")
    return out


def conditioning(ckpt):
    """(how many classes a generator is conditioned on, 0 for none; its noise) from its file."""
    settings = ckpt["settings"]
    classes = len(ckpt["classes"]) if settings.get("acgan", "on") == "on" else 0
    return classes, settings.get("noise", "normal")


def latent(G, labels, n, num_classes, generator, kind="normal"):
    """Noise for G: conditioned on labels (B,) when num_classes > 0, else n plain draws."""
    if num_classes:
        return class_noise(labels, G.latent_dim, num_classes, generator, kind)
    return draw_noise(n, G.latent_dim, generator, kind)


@torch.no_grad()
def generate(G, columns, n_per_column, num_classes, seed, device, kind="normal"):
    """n_per_column samples for each column, row-major: column c is class columns[c] for a
    conditional generator (labels returned), any sample for an unconditional one (None)."""
    labels = torch.tensor(columns, device=device).repeat(n_per_column) if num_classes else None
    g = make_generator(device, seed, "samples")
    return G(latent(G, labels, n_per_column * len(columns), num_classes, g, kind)), labels


@torch.no_grad()
def interpolations(G, rows, steps, num_classes, seed, device, kind="normal"):
    """A row of images between two noise vectors per row (sharing the class rows[r] for a
    conditional generator)."""
    labels = torch.tensor(rows, device=device) if num_classes else None
    g = make_generator(device, seed, "interpolation")
    z0, z1 = (latent(G, labels, len(rows), num_classes, g, kind) for _ in range(2))
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]  # (1, steps, 1)
    z = (1 - t) * z0[:, None] + t * z1[:, None]  # (rows, steps, latent)
    return G(z.flatten(0, 1))


@torch.no_grad()
def export_samples(G, n, num_classes, seed, device, folder, kind="normal", batch=500):
    """n generated images as PNG files in folder: 00000.png ..., or for a class-conditional
    generator balanced over the classes, 00000_c3.png (class 3) ...; returns the file names.
    Earlier exports' files there are removed first, so the folder holds this export only."""
    import re

    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        if re.fullmatch(r"\d{5,}(_c\d+)?\.png", f):
            os.remove(os.path.join(folder, f))
    g, names = make_generator(device, seed, "export"), []
    for start in range(0, n, batch):
        count = min(batch, n - start)
        labels = (torch.arange(start, start + count, device=device) % num_classes
                  if num_classes else None)
        images = to_unit(G(latent(G, labels, count, num_classes, g, kind)))  # (B, C, S, S)
        pixels = (images * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (B, S, S, C)
        for k, array in enumerate(pixels):
            i = start + k
            name = f"{i:05d}_c{i % num_classes}.png" if num_classes else f"{i:05d}.png"
            Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(
                os.path.join(folder, name))
            names.append(name)
    return names


# ----------------------------------------------------------------------------- the commands

def suffix(args, *names):
    """Settings that differ from the defaults, for file names: '_gain4_jitter2'."""
    defaults = build_parser().parse_args(["all"])
    parts = []
    for name in names:
        value = getattr(args, name)
        if value != getattr(defaults, name):
            v = "-".join(map(str, value)) if isinstance(value, list) else f"{value:g}" \
                if isinstance(value, float) else str(value)
            parts.append(name.replace("_", "") + v)
    return "".join("_" + p for p in parts)


class Context:
    """What the commands share: paths, device, loaded models, the test batch, the summary."""

    def __init__(self, args):
        self.args = args
        self.runtime = Runtime.from_args(args)
        self.device = self.runtime.device
        self.run_dir = args.run_dir
        self.out_dir = args.out_dir or os.path.join(args.run_dir, "visualization")
        in_run = lambda name: os.path.join(args.run_dir, name)  # noqa: E731
        self.paths = {"baseline": args.baseline_model or in_run(MODELS["baseline"][0]),
                      "gan": args.gan_model or in_run(MODELS["gan"][0]),
                      "generator": args.generator_model or in_run("generator.model")}
        self.names = ["baseline", "gan"] if args.model == "both" else [args.model]
        self._models, self._batch = {}, None
        self.summary_path = os.path.join(self.out_dir, "summary.json")

    def model(self, name):
        if name not in self._models:
            role, made_by = (("generator", "train_gan.py") if name == "generator"
                             else ("discriminator", MODELS[name][1]))
            model, ckpt = load_model(self.paths[name], role, made_by)
            model.requires_grad_(False)  # only the input is optimised here
            self._models[name] = (self.runtime.module(model), ckpt)
        return self._models[name]

    def classes(self, name):
        ckpt = self.model(name)[1]
        n = ckpt["arch_args"].get("num_classes", 10)
        return list(ckpt.get("classes") or [str(i) for i in range(n)])

    def with_class_head(self, figure):
        """The chosen discriminators that have a class head; one without is an error when the
        figure was asked for alone, and is skipped with a line under 'all'."""
        names = []
        for name in self.names:
            if self.model(name)[0].num_classes:
                names.append(name)
                continue
            why = (f"{figure} needs a class head, and the {name} discriminator "
                   f"({self.paths[name]}) has none (trained with --acgan off)")
            if self.args.figure != "all":
                raise UserError(why + ": try max-features or samples")
            info(f"{figure}: skipped: {why}")
        return names

    def batch(self):
        """The test batch (x in [-1, 1], labels) from the dataset the first model was trained on."""
        if self._batch is None:
            trained = self.model(self.names[0])[1]["settings"]
            dataset = self.args.dataset or trained.get("dataset", "cifar10")
            data_dir = self.args.data_dir or trained.get("data_dir", "./data")
            data = load_dataset(dataset, data_dir, self.args.cache_dir)
            x, y = pick_test_batch(data, self.args.batch_size, self.args.seed)
            self._batch = (x.to(self.device, memory_format=self.runtime.memory_format),
                           y.to(self.device))
        return self._batch

    def out(self, name):
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, name)

    def record(self, key, value):
        summary = {}
        if os.path.exists(self.summary_path):
            with open(self.summary_path) as f:
                summary = json.load(f)
        summary[key] = value
        with open(self.out(os.path.basename(self.summary_path)), "w") as f:
            json.dump(summary, f, indent=2)


def ascent_options(args, generator=None):
    return dict(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, jitter=args.jitter,
                blur_every=args.blur_every, blur_sigma=args.blur_sigma, generator=generator)


def run_perturb(ctx):
    args = ctx.args
    names = ctx.with_class_head("perturb")
    if not names:
        return
    x, y = ctx.batch()
    save_grid(to_unit(x), ctx.out("real_images.png"))
    for name in names:
        model, _ = ctx.model(name)
        num_classes = len(ctx.classes(name))
        with ctx.runtime.autocast():
            grad, altered, figures = perturb(model, x, y, args.gain, num_classes)
            curve = gain_curve(model, x, y, grad, args.max_gain, num_classes)
        g = grad.detach()
        save_grid((g - g.min()) / (g.max() - g.min()).clamp(min=1e-12),
                  ctx.out(f"gradient_image_{name}.png"))
        save_grid(to_unit(altered), ctx.out(f"altered_images_{name}{suffix(args, 'gain')}.png"))
        plot_gain_curve(curve, ctx.out(f"perturb_gain_{name}.png"), name)
        info(f"perturb {name}: accuracy {figures['acc_before']:.1f}% -> "
             f"{figures['acc_after']:.1f}% "
             f"at gain {args.gain:g}; predicted label+1 {figures['alt_before']:.1f}% -> "
             f"{figures['alt_after']:.1f}%")
        ctx.record(f"perturb_{name}", dict(gain=args.gain, **figures, curve=curve))


def plot_gain_curve(curve, path, name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    gains = [c["gain"] for c in curve]
    ax.plot(gains, [c["acc_after"] for c in curve], marker=".", label="accuracy on the true label")
    ax.plot(gains, [c["alt_after"] for c in curve], marker=".", label="predicted label + 1")
    ax.set_xlabel("gain (8-bit levels per pixel)")
    ax.set_ylabel("% of the batch")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{name} discriminator: perturbation toward label + 1", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_max_class(ctx):
    args = ctx.args
    x, _ = ctx.batch()
    mean = x.mean(0, keepdim=True)
    tag = suffix(args, "steps", "lr", "weight_decay", "jitter", "blur_every", "blur_sigma")
    for name in ctx.with_class_head("max-class"):
        model, _ = ctx.model(name)
        classes = ctx.classes(name)
        g = make_generator("cpu", args.seed, "jitter", name)
        with ctx.runtime.autocast():
            images, start, end, pred = max_class(model, mean, len(classes),
                                                 **ascent_options(args, g))
        save_grid(to_unit(images), ctx.out(f"max_class_{name}{tag}.png"), nrow=len(classes))
        hits = (pred == torch.arange(len(classes), device=pred.device)).tolist()
        for c, (s, e, ok) in enumerate(zip(start.tolist(), end.tolist(), hits)):
            info(f"max-class {name} {classes[c]:>10}: logit {s:7.2f} -> {e:7.2f}, "
                 f"classified as {classes[c] if ok else classes[pred[c]]}")
        ctx.record(f"max_class_{name}{tag}", dict(start=start.tolist(), end=end.tolist(),
                                                  hits=hits, classes=classes))


def run_max_features(ctx):
    args = ctx.args
    x, _ = ctx.batch()
    mean = x.mean(0, keepdim=True)
    tag = suffix(args, "steps", "lr", "weight_decay", "jitter", "blur_every", "blur_sigma",
                 "n_features")
    for name in ctx.names:
        model, _ = ctx.model(name)
        for layer in args.layers:
            t0 = time.time()
            g = make_generator("cpu", args.seed, "jitter", name, layer)
            with ctx.runtime.autocast():
                images, start, end = max_features(model, mean, layer, args.n_features,
                                                  **ascent_options(args, g))
            save_grid(to_unit(images), ctx.out(f"max_features_{name}_layer{layer}{tag}.png"))
            raised = (end > start).float().mean().item() * 100
            info(f"max-features {name} layer {layer}: mean feature {start.mean():.3f} -> "
                 f"{end.mean():.3f}, raised for {raised:.0f}% of {len(end)} "
                 f"({time.time() - t0:.1f}s)")
            ctx.record(f"max_features_{name}_layer{layer}{tag}",
                       dict(start_mean=start.mean().item(), end_mean=end.mean().item(),
                            raised_pct=raised))


def run_samples(ctx):
    args = ctx.args
    G, ckpt = ctx.model("generator")
    G.eval()
    classes = ctx.classes("generator")
    num_classes, kind = conditioning(ckpt)
    if not num_classes and args.classes != ["all"]:
        raise UserError("--classes: this generator is unconditional (trained with --acgan off)")
    chosen = class_indices(args.classes, classes) if num_classes else list(range(10))
    with ctx.runtime.autocast():
        images, labels = generate(G, chosen, args.n_per_class, num_classes, args.seed,
                                  ctx.device, kind)
        rows = interpolations(G, chosen, args.interp_steps, num_classes, args.seed, ctx.device,
                              kind)
    images = images.float()
    tag = suffix(args, "classes", "n_per_class") + f"_seed{args.seed}"
    save_grid(to_unit(images), ctx.out(f"samples{tag}.png"), nrow=len(chosen))
    save_grid(to_unit(rows), ctx.out(f"interpolation{tag}.png"), nrow=args.interp_steps)
    result = dict(classes=[classes[c] for c in chosen] if num_classes else None,
                  n_per_class=args.n_per_class)
    if num_classes and os.path.exists(ctx.paths["baseline"]):  # an outside judge: agreement?
        judge, _ = ctx.model("baseline")
        with torch.no_grad():
            pred = judge(images)[1].argmax(1)
        result["baseline_agreement"] = (pred == labels).float().mean().item() * 100
        info(f"samples: the baseline classifies {result['baseline_agreement']:.1f}% of "
             f"{len(labels)} samples as the class they were generated for")
    ctx.record("samples", result)


# ----------------------------------------------------------------------------- the report

def find_figure(folder, stem):
    """stem.png if it exists, else the newest stem*.png (a variant with other settings)."""
    import glob

    exact = os.path.join(folder, stem + ".png")
    if os.path.exists(exact):
        return exact
    matches = sorted(glob.glob(os.path.join(folder, stem + "*.png")), key=os.path.getmtime)
    return matches[-1] if matches else None


def model_metrics(path):
    """The final figures stored in a model file, or None when it cannot be read."""
    try:
        return load_model(path, "discriminator", "")[1].get("metrics", {})
    except UserError:
        return None


QUALITY_NAMES = {"fid": "FID", "kid": "KID", "is": "Inception Score", "cfid": "classifier FID",
                 "cacc": "classifier accuracy on the intended class (%)",
                 "intra_fid_mean": "intra-FID, mean over the classes",
                 "intra_cfid_mean": "intra classifier FID, mean over the classes"}


def quality_notes(metrics, log_path):
    """The report's lines on sample quality: metrics.py's last figures, and every evaluation
    made during training (--eval_every), read from the GAN's log."""
    notes = []
    if metrics:
        notes.append(f"metrics.py: {metrics['n_fake']} samples against {metrics['real']} "
                     f"({metrics['split']}, {metrics['n_real']} images)")
        for key, name in QUALITY_NAMES.items():
            if key in metrics:
                spread = metrics.get(f"{key}_std")
                notes.append(f"  {name}: {metrics[key]:.4g}" +
                             (f" +- {spread:.2g}" if spread is not None else ""))
    evals = []
    if os.path.exists(log_path):
        with open(log_path) as f:
            evals = [r for r in map(json.loads, f) if r.get("event") == "epoch"
                     and "eval_samples" in r]
    if evals:
        notes.append(f"during training (--eval_every), {evals[-1]['eval_samples']} samples "
                     "each (fewer than 50,000 samples read FID higher):")
        for r in evals[-12:]:
            notes.append(f"  epoch {r['epoch']}: " + ", ".join(
                f"{k} {r[k]:.4g}" for k in QUALITY_NAMES if k in r))
    return notes


def build_report(run_dir, vis_dir, path, paths=None):
    """Gather the assignment's hand-in into one PDF; returns the titles of its pages.

    What is missing is named on its page and on stderr, and the rest is still drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    paths = paths or {k: os.path.join(run_dir, f) for k, (f, _) in MODELS.items()}
    summary = {}
    if os.path.exists(os.path.join(vis_dir, "summary.json")):
        with open(os.path.join(vis_dir, "summary.json")) as f:
            summary = json.load(f)
    titles, missing = [], []

    def page(title, items, ncols, notes=()):
        """items: (caption, png path or None, what makes it) laid out on one page."""
        present = [(c, p) for c, p, _ in items if p]
        for c, p, how in items:
            if not p:
                missing.append(f"{c} (made by {how})")
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.suptitle(title, fontsize=14)
        text = list(notes) + [f"missing: {c} (made by {how})" for c, p, how in items if not p]
        if text:
            fig.text(0.04, 0.9, "\n".join(text), va="top", fontsize=9, family="monospace")
        if present:
            nrows = -(-len(present) // ncols)
            top = 0.86 - 0.025 * len(text) if text else 0.9
            grid = fig.add_gridspec(nrows, ncols, top=top, bottom=0.04, left=0.03, right=0.97,
                                    hspace=0.25, wspace=0.08)
            for i, (caption, png) in enumerate(present):
                ax = fig.add_subplot(grid[i // ncols, i % ncols])
                ax.imshow(plt.imread(png))
                ax.set_title(caption, fontsize=9)
                ax.axis("off")
        pdf.savefig(fig)
        plt.close(fig)
        titles.append(title)

    with PdfPages(path) as pdf:
        notes = []
        for name, (fname, script) in MODELS.items():
            m = model_metrics(paths[name]) if os.path.exists(paths[name]) else None
            label = "without" if name == "baseline" else "with"
            if m is None:
                missing.append(f"{fname} (made by {script})")
                notes.append(f"discriminator trained {label} the generator: {fname} missing "
                             f"(made by {script})")
            else:
                notes.append(f"discriminator trained {label} the generator ({fname}): test "
                             f"accuracy {m.get('test_acc')}% after {m.get('epochs')} epochs")
        page("Understanding CNNs and GANs: results", [], 1, notes)

        out = os.path.join(run_dir, "output")
        grids = sorted(f for f in os.listdir(out) if f.endswith(".png")) \
            if os.path.isdir(out) else []
        picks = sorted({grids[round(i * (len(grids) - 1) / 5)] for i in range(6)}) if grids else []
        page("Generator samples as training progressed (column c = class c)",
             [(f"after epoch {int(f[:-4]) + 1}", os.path.join(run_dir, "output", f), "")
              for f in picks] or [("sample grids in output/", None, "train_gan.py")], 3)

        for name in MODELS:
            s = summary.get(f"perturb_{name}", {})
            notes = [f"accuracy on the true labels {s['acc_before']:.1f}% before, "
                     f"{s['acc_after']:.1f}% after (gain {s['gain']:g}); label+1 predicted for "
                     f"{s['alt_after']:.1f}%"] if s else []
            how = "visualize.py perturb"
            page(f"Perturbed real images, {name} discriminator",
                 [("real images", find_figure(vis_dir, "real_images"), how),
                  ("gradients toward label+1", find_figure(vis_dir, f"gradient_image_{name}"), how),
                  ("altered images", find_figure(vis_dir, f"altered_images_{name}"), how),
                  ("accuracy against gain", find_figure(vis_dir, f"perturb_gain_{name}"), how)],
                 2, notes)

        how = "visualize.py max-class"
        page("Synthetic images maximising each class output (column c = class c)",
             [(f"{name} discriminator", find_figure(vis_dir, f"max_class_{name}"), how)
              for name in MODELS], 1)

        layers = sorted({int(f.split("layer")[1].split("_")[0].split(".")[0])
                         for f in os.listdir(vis_dir) if f.startswith("max_features_")}) \
            if os.path.isdir(vis_dir) else []
        for layer in layers or [None]:
            how = "visualize.py max-features"
            page(f"Synthetic images maximising layer {layer or '?'} features",
                 [(f"{name} discriminator, layer {layer}",
                   find_figure(vis_dir, f"max_features_{name}_layer{layer}") if layer else None,
                   how) for name in MODELS], 2)

        # the curves lie beside the model files the trainers wrote
        page("Training curves",
             [("baseline classifier", find_figure(os.path.dirname(paths["baseline"]) or ".",
                                                  "baseline_curves"), "train_baseline.py"),
              ("ACGAN + WGAN-GP", find_figure(os.path.dirname(paths["gan"]) or ".",
                                              "gan_curves"), "train_gan.py")], 1)

        s = summary.get("samples", {})
        notes = [f"the baseline classifies {s['baseline_agreement']:.1f}% of the samples as the "
                 "class they were generated for"] if "baseline_agreement" in s else []
        how = "visualize.py samples"
        page("Samples from the generator", [
            ("samples, one column per class", find_figure(vis_dir, "samples"), how),
            ("interpolations within a class", find_figure(vis_dir, "interpolation"), how)],
             2, notes)

        notes = quality_notes(summary.get("metrics"), os.path.join(run_dir, "gan_log.jsonl"))
        if not notes:
            missing.append("sample-quality figures (made by metrics.py, or train_gan.py "
                           "--eval_every)")
        page("Sample quality", [], 1, notes or ["missing: sample-quality figures (made by "
                                                "metrics.py, or train_gan.py --eval_every)"])

    for m in missing:
        info(f"report: missing {m}")
    info(f"report: {len(titles)} pages in {path}")
    return titles


@torch.no_grad()
def embed_all(model, images, device, batch_size=500):
    """The encoder's unit-length representations of uint8 images: (N, features)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size]).to(device)
        out.append(F.normalize(model.embed(x).float(), dim=1))
    return torch.cat(out)


def nearest(queries, pool, k):
    """For each query row, the k rows of pool most similar (cosine, unit rows): indices (Q, k)."""
    return (queries @ pool.T).topk(k, dim=1).indices


def run_neighbours(ctx):
    args = ctx.args
    path = args.encoder or os.path.join(args.run_dir, "simclr.model")
    encoder, ckpt = load_model(path, "discriminator", "train_simclr.py")
    encoder = ctx.runtime.module(encoder.requires_grad_(False))
    settings = ckpt["settings"]
    data = load_dataset(args.dataset or settings.get("dataset", "cifar10"),
                        args.data_dir or settings.get("data_dir", "./data"), args.cache_dir)
    pick = torch.randperm(len(data.test_y), generator=make_generator("cpu", args.seed,
                                                                       "neighbours"))
    pick = pick[:args.n_queries]
    q = embed_all(encoder, data.test_x[pick], ctx.device)
    pool = embed_all(encoder, data.train_x, ctx.device)
    idx = nearest(q, pool, args.k).cpu()  # (Q, k)
    rows = torch.cat([data.test_x[pick][:, None], data.train_x[idx]], dim=1)  # (Q, 1 + k, ...)
    save_grid(to_unit(to_float(rows.flatten(0, 1))), ctx.out("neighbours.png"), nrow=args.k + 1)
    agree = (data.train_y[idx] == data.test_y[pick][:, None]).float().mean().item() * 100
    info(f"neighbours: {agree:.1f}% of the {args.k} nearest training images share their test "
         f"image's class (chance {100 / data.num_classes:.0f}%)")
    ctx.record("neighbours", dict(encoder=path, k=args.k, queries=args.n_queries,
                                  same_class_pct=agree))
    return dict(same_class_pct=agree)


def run_export(ctx):
    args = ctx.args
    G, ckpt = ctx.model("generator")
    G.eval()
    num_classes, kind = conditioning(ckpt)
    folder = args.out_dir or os.path.join(args.run_dir, "export")
    with ctx.runtime.autocast():
        names = export_samples(G, args.n, num_classes, args.seed, ctx.device, folder, kind)
    info(f"export: {len(names)} images in {folder}" +
         (f", {len(names) // num_classes} or more of each of {num_classes} classes (_cK in the "
          "name)" if num_classes else ""))
    return dict(folder=folder, n=len(names), classes=num_classes)


COMMANDS = {"perturb": run_perturb, "max-class": run_max_class,
            "max-features": run_max_features, "samples": run_samples, "export": run_export,
            "neighbours": run_neighbours}
ALL = ("perturb", "max-class", "max-features", "samples")  # what 'all' makes before the report


def check_layers(ctx):
    """Every --layers value names a layer of every chosen discriminator (before any work)."""
    for name in ctx.names:
        depth = ctx.model(name)[0].depth
        bad = [k for k in ctx.args.layers if k > depth]
        if bad:
            raise UserError(f"--layers {bad[0]}: the {name} discriminator has layers 1 to {depth}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    ctx = Context(args)
    figures = list(ALL) if args.figure == "all" else [args.figure]
    figures = [f for f in figures if f != "report"]
    if "max-features" in figures:
        check_layers(ctx)
    if args.figure == "all":  # say which files are missing before any long computation
        for name in ctx.names + ["generator"]:
            ctx.model(name)
    times, result = {}, dict(script="visualize", figure=args.figure, out_dir=ctx.out_dir)
    for figure in figures:
        t0 = time.time()
        made = COMMANDS[figure](ctx)
        if made:
            result[figure] = made
        times[figure] = round(time.time() - t0, 2)
        info(f"{figure}: {times[figure]:.1f}s")
    result["seconds"] = times
    if args.figure in ("report", "all"):
        t0 = time.time()
        result["report"] = ctx.out("report.pdf")
        result["pages"] = build_report(ctx.run_dir, ctx.out_dir, result["report"], ctx.paths)
        times["report"] = round(time.time() - t0, 2)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    run_main(main)
