"""Speed of the fast path against the original code's way of running, side by side.

    python bench.py                                  # on a GPU node: the figures to quote
    python bench.py --device cpu --width 32 --steps 3 --warmup 1   # a quick look on a CPU
    python bench.py --which gan --compile off        # one part, one speed-up turned off
    python bench.py --device cpu --which flags       # each speed flag alone and all together

Images/s, milliseconds per step and peak memory (the GPU allocator's, or the process's resident
peak on a CPU) of the baseline step, the GAN iteration and each visualisation, for the fast
path (the speed flags as given; auto: docs/speed.md) and the 2018 code's way (fp32, eager, a
DataLoader with per-image PIL transforms), with their ratio. The images are random unless
--data_dir names a CIFAR-10 copy: speed does not depend on them. --which recipes times every
recipe's GAN iteration, --which flags each speed flag against none. The last line on stdout is
JSON with every figure.
"""
import argparse
import itertools
import json
import time
from functools import partial

import torch

from flags import (COUNT, POSITIVE_INT, SEED, ArgumentParser, add_speed_flags, run_main,
                   runtime_settings)
from models import Discriminator
from recipes import RECIPES, recipe_values
from utils.augment import Augment, jitter_strengths
from utils.classifier import train_step
from utils.console import info, tidy
from utils.data import Batches, ImageData, load_dataset
from utils.errors import DataError, UserError
from utils.figures.ascent import ascend, own_class_logit, own_feature
from utils.figures.perturbation import perturb
from utils.gan import GanSpec, build_gan, gan_iteration
from utils.runtime import SPEED_FLAGS, Runtime, peak_memory_mib, reset_peak_memory
from utils.settings import Settings


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--which", nargs="+", choices=("all", *PARTS, "recipes", "flags"),
                   default=["all"],
                   help="what to measure: all (every part but flags), or any of baseline, gan, "
                        "visualize, recipes and flags (each speed flag alone and all together "
                        "against none, for the baseline step and the GAN iteration: the "
                        "figures that choose what 'auto' turns on for a device)")
    p.add_argument("--width", type=POSITIVE_INT, default=None,
                   help="channels of the hidden layers (default: the assignment's 196; for the "
                        "recipes, each recipe's own)")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=None,
                   help="images per training step (default: the assignment's 128; for the "
                        "recipes, each recipe's own)")
    p.add_argument("--steps", type=POSITIVE_INT, default=30, help="timed steps per measurement")
    p.add_argument("--warmup", type=COUNT, default=10,
                   help="untimed steps first (compilation, cuDNN autotuning, worker start-up)")
    p.add_argument("--original_workers", type=COUNT, default=2,
                   help="DataLoader workers of the original-style path (the assignment's 2)")
    p.add_argument("--data_dir", default=None,
                   help="a CIFAR-10 copy to read images from (default: random images)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random images and draws")
    add_speed_flags(p)
    return p


# ----------------------------------------------------------------------------- measuring

def timed(step, device, steps, warmup, images_per_step):
    """Run step() warmup + steps times; figures of the timed part, and first_s: the first
    step's own time (compilation and autotuning land there)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda device: None
    first_s = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        step()
        sync(device)
        first_s = time.perf_counter() - t0 if first_s is None else first_s
    reset_peak_memory(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    return dict(ms_per_step=round(dt * 1000, 2), images_per_s=round(images_per_step / dt, 1),
                peak_mib=round(peak_memory_mib(device), 1),
                first_s=None if first_s is None else round(first_s, 2))


# ----------------------------------------------------------------------------- the data paths

class PilDataset(torch.utils.data.Dataset):
    """The original pipeline: each image through PIL and torchvision's transforms."""

    def __init__(self, images, labels, transform):
        self.images = images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C) for PIL
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def original_batches(data, batch_size, workers, seed, device):
    """An endless iterator of batches the 2018 way, moved to the device."""
    import torchvision.transforms as T

    b, c, s, h = jitter_strengths(seed)
    transform = T.Compose([T.RandomResizedCrop(32, scale=(0.7, 1.0), ratio=(1.0, 1.0)),
                           T.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h),
                           T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    loader = torch.utils.data.DataLoader(
        PilDataset(data.train_x, data.train_y, transform), batch_size=batch_size, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))
    while True:
        for x, y in loader:
            yield x.to(device), y.to(device)


def fast_batches(data, batch_size, seed, runtime, augment=True):
    """An endless iterator of this project's batches (on-device uint8, batched augmentation)."""
    aug = Augment(jitter_strengths(seed), size=data.image_size) if augment else None
    train = Batches(data.train_x, data.train_y, batch_size, runtime.device, seed=seed,
                    shuffle=True, drop_last=True, augment=aug,
                    on_device=runtime.data_on_device, memory_format=runtime.memory_format)
    for epoch in itertools.count():
        yield from train.epoch(epoch)


def random_data(n, seed, channels=3, size=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return ImageData("random", x, y, x[:256], y[:256], tuple(map(str, range(10))), flip=True)


# ----------------------------------------------------------------------------- the measurements

def baseline_step(args, rt, batches):
    """The classifier's training step on the runtime's path, timed."""
    torch.manual_seed(args.seed)
    model = rt.module(Discriminator(args.width))
    opt = rt.adam(model.parameters(), lr=1e-4)
    fast = rt.compiled(model)
    it = batches()

    def step():
        x, y = next(it)
        train_step(fast, opt, x, y, rt)

    return timed(step, rt.device, args.steps, args.warmup, args.batch_size)


def gan_stepper(settings, classes, rt, it, seed, **shape):
    """step(): one whole GAN iteration (generator step, critic step with the gradient penalty)
    of settings' networks on the batches of `it`."""
    nets, opt_g, opt_d = build_gan(settings, classes, rt, **shape)
    spec, count = GanSpec.of(settings), itertools.count()
    gen = torch.Generator(device=rt.device).manual_seed(seed)

    def step():
        real, labels = next(it)
        gan_iteration(nets, opt_g, opt_d, real, labels, next(count), spec, rt, gen)

    return step


def gan_step(args, rt, batches):
    """The assignment's GAN iteration on the runtime's path, timed."""
    settings = Settings.resolve(recipe_values("ie534", width=args.width, seed=args.seed))
    step = gan_stepper(settings, 10, rt, batches(), args.seed)
    return timed(step, rt.device, args.steps, args.warmup, args.batch_size)


def side_by_side(job, measure, args, data, runtime, plain):
    """{job: measure() on the fast path and on the original way of running}."""
    return {job: {
        "fast": measure(args, runtime,
                        lambda: fast_batches(data, args.batch_size, args.seed, runtime)),
        "original": measure(args, plain,
                            lambda: original_batches(data, args.batch_size, args.original_workers,
                                                     args.seed, plain.device)),
    }}


def flag_variants(device):
    """none, each speed flag alone, and all: the runtimes the flags table compares (holding
    the data on the device means nothing on the CPU, where it already is)."""
    names = [k for k in SPEED_FLAGS if device.type == "cuda" or k != "data_on_device"]
    return {"none": {}, **{k: {k: True} for k in names}, "all": dict.fromkeys(names, True)}


def bench_flags(args, data, device, variants=None):
    """Each speed flag alone and all together (or the variants given) against none, for the
    baseline step and the GAN iteration on this project's batches."""
    out = {}
    for job, measure in (("baseline_step", baseline_step), ("gan_iteration", gan_step)):
        rows = out[job] = {}
        for name, flags in (variants or flag_variants(device)).items():
            rt = Runtime(device, **flags)
            info(f"flags: {job}, {name} ...")
            rows[name] = measure(args, rt,
                                 lambda: fast_batches(data, args.batch_size, args.seed, rt))
            rows[name]["speedup"] = ratio(rows[name], rows["none"])
    return out


def bench_visualize(args, data, runtime, plain):
    """Each figure's unit of work: one perturbation of 100 images, one ascent step of max-class
    (10 images) and of max-features at layer 8 (100 images)."""
    out = {}
    x100, y100 = data.test_x[:100].float().div(127.5).sub(1), data.test_y[:100]
    for name, rt in (("fast", runtime), ("original", plain)):
        torch.manual_seed(args.seed)
        model = rt.module(Discriminator(args.width)).eval().requires_grad_(False)
        x, y = x100.to(rt.device, memory_format=rt.memory_format), y100.to(rt.device)

        def with_amp(objective):
            def run(z):
                with rt.autocast():
                    return objective(z).float()
            return run

        cls = with_amp(own_class_logit(model))
        feat = with_amp(own_feature(model, 8))
        jobs = {"perturb": (lambda: perturb_amp(model, x, y, rt), len(x)),
                "max_class_step": (lambda: ascend(cls, x[:10], steps=1), 10),
                "max_features_step": (lambda: ascend(feat, x, steps=1), len(x))}
        for job, (fn, n) in jobs.items():
            out.setdefault(job, {})[name] = timed(fn, rt.device, args.steps, args.warmup, n)
    return out


# The side-by-side parts (the fast path against the original way), in the order they run.
PARTS = {"baseline": partial(side_by_side, "baseline_step", baseline_step),
         "gan": partial(side_by_side, "gan_iteration", gan_step), "visualize": bench_visualize}

# What each recipe's dataset looks like: (channels, image side).
SHAPES = {"cifar10": (3, 32), "svhn": (3, 32), "mnist": (1, 28), "fashion_mnist": (1, 28)}


def bench_recipes(args, runtime, width=None, batch_size=None):
    """Every recipe's GAN iteration on the fast path, on random images of its dataset's shape,
    with the recipe's own width and batch unless they are given."""
    out = {}
    given = {k: v for k, v in (("width", width), ("batch_size", batch_size)) if v}
    for recipe in RECIPES:
        a = Settings.resolve(recipe_values(recipe, seed=args.seed, **given))
        batch = a.data.batch_size
        channels, size = SHAPES[a.data.dataset]
        data = random_data(max(1024, (args.steps + args.warmup + 2) * batch), args.seed,
                           channels, size)
        it = fast_batches(data, batch, args.seed, runtime, augment=a.data.augment != "none")
        step = gan_stepper(a, 10 if a.gan.acgan == "on" else 0, runtime, it, args.seed,
                           channels=channels, image_size=size)
        out[recipe] = dict(timed(step, runtime.device, args.steps, args.warmup, batch),
                           batch_size=batch, arch=a.model.arch, loss=a.gan.loss)
    return out


def perturb_amp(model, x, y, runtime):
    with runtime.autocast():
        return perturb(model, x, y, 8.0)


def ratio(fast, original):
    return round(fast["images_per_s"] / original["images_per_s"], 2)


def brief(f):
    return f"{f['images_per_s']:>9.1f} img/s {f['ms_per_step']:>8.2f} ms {f['peak_mib']:>8.1f} MiB"


def wanted(args, part):
    return part in args.which or ("all" in args.which and part != "flags")


def print_side_by_side(rows, device_name, args, images):
    print("\n| measurement | fast img/s | fast ms/step | fast peak MiB | original img/s | "
          "original ms/step | original peak MiB | speed-up |", flush=True)
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for job, f in rows:
        cells = [f[path][k] for path in ("fast", "original")
                 for k in ("images_per_s", "ms_per_step", "peak_mib")]
        print(f"| {job} | {' | '.join(map(str, cells))} | x{f['speedup']} |")
    print(f"\n{device_name}, torch {torch.__version__}, width {args.width}, batch "
          f"{args.batch_size}, {images}\n")


def print_flags(table, device_name, args):
    print("| measurement | speed flags | img/s | ms/step | first step s | peak MiB | "
          "against none |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for job, rows in table.items():
        for name, f in rows.items():
            print(f"| {job} | {name} | {f['images_per_s']} | {f['ms_per_step']} | "
                  f"{f['first_s']} | {f['peak_mib']} | x{f['speedup']} |")
    print(f"\n{device_name}, torch {torch.__version__}, width {args.width}, batch "
          f"{args.batch_size}, this project's batches; first step: the first warm-up step, "
          "compilation included\n")


def load_cifar10_copy(data_dir):
    """The images bench.py times with --data_dir: CIFAR-10 alone (speed depends on shape)."""
    try:
        return load_dataset("cifar10", data_dir)
    except DataError as e:
        raise UserError(f"--data_dir {data_dir}: bench.py reads a CIFAR-10 copy there "
                        f"(torchvision's files, or the PNG layout), and this one is not usable "
                        f"({str(e).split(';')[0]}); leave --data_dir out to time random "
                        "images") from None


def main(argv=None):
    given = build_parser().parse_args(argv)
    recipe_sizes = dict(width=given.width, batch_size=given.batch_size)  # as given, or None
    args = argparse.Namespace(**{**vars(given), "width": given.width or 196,  # the assignment's
                                 "batch_size": given.batch_size or 128})
    runtime = Runtime.from_settings(runtime_settings(args))
    plain = Runtime(runtime.device)  # fp32, eager, nothing on the device ahead of time
    device_name = (torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda"
                   else f"CPU ({torch.get_num_threads()} threads)")
    n = max(1024, (args.steps + args.warmup + 2) * args.batch_size)
    data = load_cifar10_copy(args.data_dir) if args.data_dir else random_data(n, args.seed)
    info(f"device: {device_name}; fast path: {json.dumps(runtime.describe())}")
    results = dict(device=device_name, torch=torch.__version__, width=args.width,
                   batch_size=args.batch_size, fast_path=runtime.describe(),
                   images="CIFAR-10" if args.data_dir else "random uint8, CIFAR-10 shape")
    rows = []
    for part, fn in PARTS.items():
        if not wanted(args, part):
            continue
        for job, figs in fn(args, data, runtime, plain).items():
            figs["speedup"] = ratio(figs["fast"], figs["original"])
            results[job] = figs
            rows.append((job, figs))
            info(f"{job:18s} fast {brief(figs['fast'])} | original {brief(figs['original'])} | "
                 f"x{figs['speedup']}")
    if rows:
        print_side_by_side(rows, device_name, args, results["images"])
    if wanted(args, "flags"):
        results["flags"] = bench_flags(args, data, runtime.device)
        print_flags(results["flags"], device_name, args)
    if wanted(args, "recipes"):
        results["recipes"] = bench_recipes(args, runtime, **recipe_sizes)
        print("| recipe | networks | loss | batch | img/s | ms/iteration | peak MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for recipe, f in results["recipes"].items():
            info(f"{recipe:18s} {f['images_per_s']:>9.1f} img/s {f['ms_per_step']:>8.2f} ms")
            print(f"| {recipe} | {f['arch']} | {f['loss']} | {f['batch_size']} | "
                  f"{f['images_per_s']} | {f['ms_per_step']} | {f['peak_mib']} |")
        print(f"\n{device_name}, fast path, random images of each dataset's shape\n")
    print(json.dumps(tidy(results)), flush=True)
    return results


if __name__ == "__main__":
    run_main(main)
