"""Nearest neighbours in an encoder's representation (SimCLR, seed 004): test images and the
training images most similar to them."""
import os

import torch
import torch.nn.functional as F

from utils import runfiles
from utils.checkpoints import load_model
from utils.console import info
from utils.data import load_dataset, make_generator, to_float
from utils.errors import UserError
from utils.pictures import save_grid, to_unit


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
    opts = ctx.options
    path = opts.encoder or os.path.join(opts.run_dir, runfiles.SIMCLR_MODEL)
    encoder, ckpt = load_model(path, "discriminator", "train_simclr.py")
    encoder = ctx.runtime.module(encoder.requires_grad_(False))
    settings = ckpt["settings"]
    data = load_dataset(opts.dataset or settings.get("dataset", "cifar10"),
                        opts.data_dir or settings.get("data_dir", "./data"), opts.cache_dir)
    if opts.k > len(data.train_y):
        raise UserError(f"--k {opts.k}: {data.name} has only {len(data.train_y)} training images "
                        "to search; choose a smaller --k")
    g = make_generator("cpu", opts.seed, "neighbours")
    pick = torch.randperm(len(data.test_y), generator=g)[:opts.n_queries]
    q = embed_all(encoder, data.test_x[pick], ctx.device)
    pool = embed_all(encoder, data.train_x, ctx.device)
    idx = nearest(q, pool, opts.k).cpu()  # (Q, k)
    rows = torch.cat([data.test_x[pick][:, None], data.train_x[idx]], dim=1)  # (Q, 1 + k, ...)
    save_grid(to_unit(to_float(rows.flatten(0, 1))), ctx.out("neighbours.png"), nrow=opts.k + 1,
              mark_column=0)  # the test image, framed; its nearest training images follow
    agree = (data.train_y[idx] == data.test_y[pick][:, None]).float().mean().item() * 100
    info(f"neighbours: {agree:.1f}% of the {opts.k} nearest training images share their test "
         f"image's class (chance {100 / data.num_classes:.0f}%)")
    ctx.paths["encoder"] = path
    ctx.record("neighbours", dict(encoder=path, k=opts.k, queries=opts.n_queries,
                                  same_class_pct=agree), files=["neighbours.png"],
               uses=["encoder"])
    return dict(same_class_pct=agree)
