"""A generator's samples: a grid with one column per class, interpolations between two noise
vectors, and the export of many samples as PNG files (what FID tools read)."""
import contextlib
import os

import torch

from utils import runfiles
from utils.console import info, progress
from utils.errors import UserError
from utils.data import make_generator
from utils.pictures import save_grid, to_unit
from utils.sampling import conditioning, noise


def class_indices(names, classes):
    """Class names or indices -> indices; 'all' -> every class."""
    if names is None or list(names) == ["all"]:
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


@torch.no_grad()
def generate(G, columns, n_per_column, num_classes, seed, device, kind="normal"):
    """n_per_column samples for each column, row-major: column c is class columns[c] for a
    conditional generator (labels returned), any sample for an unconditional one (None)."""
    labels = torch.tensor(columns, device=device).repeat(n_per_column) if num_classes else None
    g = make_generator(device, seed, "samples")
    z = noise(n_per_column * len(columns), G.latent_dim, num_classes, g, kind, labels)
    return G(z), labels


@torch.no_grad()
def interpolations(G, rows, steps, num_classes, seed, device, kind="normal"):
    """A row of images between two noise vectors per row (sharing the class rows[r] for a
    conditional generator)."""
    labels = torch.tensor(rows, device=device) if num_classes else None
    g = make_generator(device, seed, "interpolation")
    z0, z1 = (noise(len(rows), G.latent_dim, num_classes, g, kind, labels) for _ in range(2))
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]  # (1, steps, 1)
    z = (1 - t) * z0[:, None] + t * z1[:, None]  # (rows, steps, latent)
    return G(z.flatten(0, 1))


EXPORT_MARK = ".cnn_gan_export.json"  # marks a folder as an export of this project
STAGING = ".cnn_gan_export.partial"  # where a new export is written until it is whole


def export_names(n, num_classes):
    """The file names of an export of n images: 00000.png ..., or 00000_c3.png (class 3)."""
    return [f"{i:05d}_c{i % num_classes}.png" if num_classes else f"{i:05d}.png" for i in range(n)]


def _count(v):
    return type(v) is int and v >= 0


def read_mark(folder):
    """A folder's export mark: {n, classes, complete, and while one export replaces another
    the earlier one's n and classes}, None where there is none; a damaged one is refused."""
    from utils.files import read_json

    path = os.path.join(folder, EXPORT_MARK)
    mark = read_json(path, None, kind=dict, remedy="export into a new or empty folder "
                                                   "(nothing was deleted)")
    if mark is None:
        return None
    earlier = mark.get("replacing") or {}
    if not (_count(mark.get("n")) and _count(mark.get("classes"))
            and isinstance(earlier, dict) and all(_count(earlier.get(k, 0))
                                                  for k in ("n", "classes"))):
        raise UserError(f"{path} is damaged (not an export mark of this project): export into "
                        "a new or empty folder (nothing was deleted)")
    return mark


def check_foreign_images(folder, mark):
    """An export's folder holds no PNG file that the export (or one it was replacing) did not
    write: metrics.py would measure it with the export's images."""
    if mark is None:
        return
    ours = {name for m in (mark, mark.get("replacing") or {})
            for name in export_names(m.get("n", 0), m.get("classes", 0))}
    foreign = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png")
                     and not f.startswith(".") and f not in ours)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(f"{folder} is an export of this project, but holds PNG files it did "
                        f"not write ({foreign[0]}{more}): they would be measured with it; "
                        "move them out (nothing was deleted)")


def export_complete(folder):
    """Whether folder holds a whole export: its mark says so and every file it names is there
    (a mark without 'complete', from before marks said so, counts)."""
    mark = read_mark(folder)
    if mark is None or mark.get("complete") is False or mark.get("replacing"):
        return mark is None  # no mark: a folder of PNG files from elsewhere, read as it is
    names = export_names(mark["n"], mark["classes"])
    return all(os.path.isfile(os.path.join(folder, name)) for name in names)


def claim_export_folder(folder):
    """An export goes into a new or empty folder, or one an earlier export marked as its own
    (nothing the project did not write is deleted); what a killed export left goes."""
    from utils.files import LOCKS, check_writable_folder, remove_stale_temps

    mark = read_mark(folder) if os.path.isdir(folder) else None
    if mark is None and os.path.isdir(folder) and [
            f for f in os.listdir(folder) if f != STAGING and not LOCKS.match(f)]:
        raise UserError(f"{folder} holds files this project did not write: export into a new "
                        "or empty folder (nothing was deleted)")
    check_foreign_images(folder, mark)
    check_writable_folder(folder)
    remove_stale_temps(folder)
    staging = os.path.join(folder, STAGING)
    if os.path.isdir(staging):
        for name in os.listdir(staging):  # only image files of an export, and temporaries
            if name.endswith(".png") or ".tmp" in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(staging, name))
    return mark


@torch.no_grad()
def export_samples(G, n, num_classes, seed, device, folder, kind="normal", batch=500):
    """n generated images as PNG files in folder (export_names, balanced over the classes);
    returns the file names. Written whole in a staging folder first, then swapped in under a
    mark that says 'incomplete', so that an export cut short at any instant never reads as
    whole and the next export may remove these files and no others."""
    from PIL import Image

    from utils.files import atomic_path, atomic_write_json

    earlier = claim_export_folder(folder)
    staging = os.path.join(folder, STAGING)
    os.makedirs(staging, exist_ok=True)
    g, names = make_generator(device, seed, "export"), export_names(n, num_classes)
    for start in progress(range(0, n, batch), -(-n // batch), "export"):
        count = min(batch, n - start)
        labels = (torch.arange(start, start + count, device=device) % num_classes
                  if num_classes else None)
        images = to_unit(G(noise(count, G.latent_dim, num_classes, g, kind, labels)))
        pixels = (images * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (B, S, S, C)
        for k, array in enumerate(pixels):
            path = os.path.join(staging, names[start + k])
            with atomic_path(path, suffix=".png", durable=False) as tmp:
                Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(tmp)
    mark, earlier = os.path.join(folder, EXPORT_MARK), earlier or {}
    # the earlier export's files, and those of a swap it left unfinished
    old = [name for m in (earlier, earlier.get("replacing") or {})
           for name in export_names(m.get("n", 0), m.get("classes", 0))]
    atomic_write_json(mark, dict(n=n, classes=num_classes, complete=False,
                                 replacing=dict(n=earlier["n"], classes=earlier["classes"])
                                 if earlier else None))
    for name in sorted(set(old) - set(names)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(folder, name))
    with contextlib.suppress(OSError):
        os.rmdir(staging)
    atomic_write_json(mark, dict(n=n, classes=num_classes, complete=True))
    return names


def load_generator(ctx):
    """The generator in eval mode, its number of classes (0: unconditional) and noise kind."""
    G, ckpt = ctx.model("generator")
    return G.eval(), *conditioning(ckpt)


def run_samples(ctx):
    opts = ctx.options
    G, num_classes, kind = load_generator(ctx)
    classes = ctx.classes("generator")
    if not num_classes and list(opts.classes) != ["all"]:
        raise UserError("--classes: this generator is unconditional (trained with --acgan off)")
    chosen = class_indices(opts.classes, classes) if num_classes else list(range(10))
    with ctx.runtime.autocast():
        images, labels = generate(G, chosen, opts.n_per_class, num_classes, opts.seed,
                                  ctx.device, kind)
        rows = interpolations(G, chosen, opts.interp_steps, num_classes, opts.seed, ctx.device,
                              kind)
    images = images.float()
    tag = ctx.suffix("classes", "n_per_class") + f"_seed{opts.seed}"
    made = [f"samples{tag}.png", f"interpolation{tag}.png"]
    names = [classes[c] for c in chosen] if num_classes else None
    save_grid(to_unit(images), ctx.out(made[0]), nrow=len(chosen), labels=names)
    save_grid(to_unit(rows), ctx.out(made[1]), nrow=opts.interp_steps)
    result = dict(classes=names, n_per_class=opts.n_per_class, conditional=bool(num_classes))
    uses = ["generator"]
    if num_classes and os.path.exists(ctx.paths["baseline"]):  # an outside judge: agreement?
        judge, _ = ctx.model("baseline")
        with torch.no_grad():
            pred = judge(images)[1].argmax(1)
        result["baseline_agreement"] = (pred == labels).float().mean().item() * 100
        info(f"samples: the baseline classifies {result['baseline_agreement']:.1f}% of "
             f"{len(labels)} samples as the class they were generated for")
        uses.append("baseline")
    ctx.record("samples", result, files=made, uses=uses)


def run_export(ctx):
    opts = ctx.options
    G, num_classes, kind = load_generator(ctx)
    folder = opts.out_dir or os.path.join(opts.run_dir, runfiles.EXPORT)
    with ctx.runtime.autocast():
        names = export_samples(G, opts.n, num_classes, opts.seed, ctx.device, folder, kind)
    info(f"export: {len(names)} images in {folder}" +
         (f", {len(names) // num_classes} or more of each of {num_classes} classes (_cK in the "
          "name)" if num_classes else ""))
    return dict(folder=folder, n=len(names), classes=num_classes)
