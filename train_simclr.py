"""SimCLR (seed 004): self-supervised pre-training of the assignment's network, no labels.

    python train_simclr.py                                  # CIFAR-10, the ie534 trunk, 100 epochs
    python train_simclr.py --dataset digits --width 16 --epochs 30 --out_dir runs/simclr
    python train_baseline.py --init runs/simclr/simclr.model --freeze --out_dir runs/probe
    python train_baseline.py --init runs/simclr/simclr.model --labels_per_class 50 \\
        --out_dir runs/finetune50                           # fine-tuned on 500 labels
    python visualize.py neighbours --run_dir runs/simclr    # nearest images in the representation

Two augmented views of every image go through the encoder (the discriminator's trunk) and a
projection head; NT-Xent pulls each pair together against the other views of the global
batch. Writes simclr.model (the encoder: train_baseline.py --init reads it), simclr.ckpt,
simclr_log.jsonl, simclr_config.json and simclr_curves.png; the last line on stdout is JSON.
"""
import os
from dataclasses import dataclass

import torch

from flags import (NONNEGATIVE, POSITIVE, POSITIVE_INT, ArgumentParser, add_shared_flags,
                   add_speed_flags, download_only, resolve_settings, run_main)
from losses import nt_xent
from models import ProjectionHead, SimCLRNet, discriminator
from utils import runfiles
from utils.augment import ContrastiveAugment
from utils.checkpoints import OPTIMIZER, WEIGHTS, load_state
from utils.console import print_result
from utils.data import make_generator
from utils.pictures import CURVE_PANELS, plot_curves
from utils.runtime import seed_everything
from utils.trainer import EpochEnd, check_batch_statistics
from utils.training import descend, open_run

MODEL_FILE = runfiles.SIMCLR_MODEL


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_flags(p, epochs=100, lr=1e-3, batch_size=256, adam_step_cap=0)  # plain Adam
    p.set_defaults(augment="none")  # the views are SimCLR's own, drawn in the step
    add_speed_flags(p, training=True)
    g = p.add_argument_group("SimCLR")
    g.add_argument("--temperature", type=POSITIVE, default=0.5, help="NT-Xent's tau")
    g.add_argument("--proj_dim", type=POSITIVE_INT, default=128,
                   help="values the projection head g outputs")
    g.add_argument("--weight_decay", type=NONNEGATIVE, default=1e-6,
                   help="Adam's weight decay (seed 004's code: 1e-6)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


@dataclass(frozen=True)
class SimCLROptions:
    """This command's own settings (Adam's weight decay is utils.settings.OptimSettings')."""
    temperature: float = 0.5
    proj_dim: int = 128


def resolve(argv=None):
    """The command line resolved once into Settings."""
    return resolve_settings(vars(parse_args(argv)), SimCLROptions)


def gather(z, dist):
    """Every process's z, in rank order, with the gradient flowing back to each one's own
    (the negatives of the loss come from the global batch)."""
    if not dist.enabled:
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z))


class SimCLRTrainer:
    """SimCLR for the shared epoch loop (utils.training.Run.fit)."""
    kind = "simclr"
    products, patterns = (MODEL_FILE,), ()  # what a finished run leaves
    fields = {"encoder": WEIGHTS, "head": WEIGHTS, "optimizer": OPTIMIZER}
    sums_width = 3  # loss sum, views whose positive is their most similar, views

    def __init__(self, settings, net, optimizer, runtime, *, fast=None, augment=None, dist=None,
                 rank=0):
        self.settings, self.net, self.optimizer, self.runtime = settings, net, optimizer, runtime
        self.fast = net if fast is None else fast  # what the step runs through (compiled, DDP)
        self.augment, self.dist, self.rank = augment, dist, rank

    def state(self):
        return {"encoder": self.net.encoder.state_dict(), "head": self.net.head.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load(self, ckpt, path):
        load_state(self.net.encoder, ckpt["encoder"], path, "encoder")
        load_state(self.net.head, ckpt["head"], path, "projection head")
        load_state(self.optimizer, ckpt["optimizer"], path, "optimizer state")

    def begin_epoch(self, epoch):
        self.net.train()
        self.epoch = epoch

    def views(self, x, i):
        """Two augmented views of the batch x (in [-1, 1]), drawn from (seed, epoch, i, rank)."""
        gen = make_generator(x.device, self.settings.seed, "simclr", self.epoch, i, self.rank)
        x01 = x.float().add(1).div(2)
        both = torch.cat([self.augment(x01, gen), self.augment(x01, gen)]).mul(2).sub(1)
        return both.contiguous(memory_format=self.runtime.memory_format)

    def step(self, i, x, y, sums):
        views = self.views(x, i)  # (2B, C, S, S): the first views, then the second
        with self.runtime.autocast():
            z = self.fast(views)
        z_left, z_right = (gather(part.float(), self.dist) for part in z.chunk(2))
        loss = nt_xent(z_left, z_right, self.settings.options.temperature)
        descend(self.optimizer, loss, self.settings.optim.adam_step_cap)
        with torch.no_grad():  # is each view's most similar other view its positive?
            zn = torch.nn.functional.normalize(torch.cat([z_left, z_right]), dim=1)
            sim = (zn @ zn.T).fill_diagonal_(-2)
            n = len(z_left)  # view k's positive is k + n, k - n for the second views
            hits = (sim.argmax(1) == torch.arange(2 * n, device=sim.device).roll(n)).sum()
        sums[0] += loss.detach() * (2 * n)  # in place, with Python scalars: no host copies
        sums[1] += hits
        sums[2] += 2 * n
        return loss.detach()

    def means(self, sums):
        loss, hits, n = sums.tolist()
        n = max(n, 1.0)
        return dict(loss=round(loss / n, 4), pos_acc=round(100 * hits / n, 2))

    def end_epoch(self, epoch, means, seconds, history):
        return EpochEnd(dict(means),
                        f"loss {means['loss']:.4f} positive found {means['pos_acc']:.1f}%")

    def plot(self, history):
        plot_curves(history, CURVE_PANELS["simclr"],
                    os.path.join(self.settings.loop.out_dir, runfiles.curves(self.kind)),
                    "SimCLR pre-training")


def run(s):
    """Pre-train as the resolved Settings say; returns (final figures, SimCLRNet)."""
    with open_run(s, SimCLRTrainer) as r:
        rt, dist = r.runtime, r.dist
        data, train, _ = r.load_data()
        seed_everything(s.seed)
        encoder = discriminator(s.model.arch, s.model.width, 0, data.channels, data.image_size)
        encoder.fc1.requires_grad_(False)  # the critic's head plays no part (DDP needs to know)
        features = encoder.embed(torch.zeros(2, data.channels, data.image_size,
                                             data.image_size)).shape[1]
        net = rt.module(SimCLRNet(encoder, ProjectionHead(features, features, s.options.proj_dim)))
        check_batch_statistics(train, net)  # the projection head's BatchNorm
        optimizer = rt.adam([p for p in net.parameters() if p.requires_grad], lr=s.optim.lr,
                            weight_decay=s.optim.weight_decay)
        trainer = SimCLRTrainer(s, net, optimizer, rt,
                                fast=rt.compiled(dist.wrap(net, rt.device)),
                                augment=ContrastiveAugment(data.image_size, flip=data.flip),
                                dist=dist, rank=train.rank)
        r.begin(trainer)
        r.say(f"{data.name}: {len(data.train_y)} training images (labels unused), {len(train)} "
              f"steps per epoch on {rt.device}; encoder {s.model.arch} ({features} features)")
        final = r.fit(trainer, train)
        metrics = dict(loss=final.get("loss"), pos_acc=final.get("pos_acc"),
                       epochs=s.loop.epochs, seconds=round(r.seconds, 1),
                       model=os.path.join(s.loop.out_dir, MODEL_FILE))
        r.save_model(metrics["model"], net.encoder, metrics, data.classes, "train_simclr.py")
        return metrics, net


def main(argv=None):
    settings = resolve(argv)
    if settings.data.download_only:  # a login node: the data, nothing trained
        return download_only(settings, "train_simclr")
    metrics, _ = run(settings)
    print_result("train_simclr", metrics, dataset=settings.data.dataset)
    return metrics


if __name__ == "__main__":
    run_main(main)
