"""What the trainers share: the run (flags checked, processes joined, checkpoint found, log
opened), the batches, evaluation and the Adam step guard."""
import contextlib
import json
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from checkpoints import (
    check_same_settings,
    load_checkpoint,
    resolve_resume,
    settings,
    write_settings,
)
from cli import UserError, check_shared_flags, info
from distributed import Dist, StopSignal, init_distributed
from runtime import Runtime


def adam_step_guard(optimizer, cap=1024, reset=None):
    """The assignment's guard against Adam's step count growing without bound.

    Any parameter whose step has reached `cap` is set back to `reset` (default cap - 24, the
    assignment's 1024 -> 1000; at least 1). Current PyTorch keeps the step as a tensor (on the
    CPU, or on the GPU for fused/capturable Adam); it is changed in place, with no host-device
    sync.
    """
    if not cap:
        return
    reset = max(1, cap - 24) if reset is None else reset
    for group in optimizer.param_groups:
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if step is None:
                continue
            if torch.is_tensor(step):
                step.copy_(torch.where(step >= cap, torch.full_like(step, reset), step))
            elif step >= cap:
                optimizer.state[p]["step"] = reset


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What a training script sets up before it touches data or models."""
    args: object
    dist: Dist
    runtime: Runtime
    config: dict
    ckpt_path: str
    resume_from: str = None
    ckpt: dict = None
    files: tuple = ()
    log: object = None  # the JSON-lines log; None on every rank but 0
    stop: object = None

    def begin(self):
        """Once the data and models are ready: print and save the settings, open the log and
        listen for the stop signals. Nothing is written before this."""
        config_name, log_name = self.files
        if self.dist.is_main:
            info("settings: " + json.dumps(self.config))
            info("runtime: " + json.dumps(dict(self.runtime.describe(),
                                                processes=self.dist.world_size)))
            write_settings(self.args, os.path.join(self.args.out_dir, config_name))
            self.log = JsonLog(os.path.join(self.args.out_dir, log_name), fresh=not self.ckpt)
        self.stop = StopSignal(self.dist, self.args.stop_file, self.args.time_limit)
        if self.ckpt:
            self.say(f"resuming {self.resume_from} at epoch {self.ckpt['epoch'] + 1}, "
                     f"step {self.ckpt.get('step', 0)}")

    def say(self, message):
        if self.dist.is_main:
            info(message)

    def position(self):
        """(epoch, step, partial sums) to start from: (0, 0, None) for a fresh run."""
        if not self.ckpt:
            return 0, 0, None
        return self.ckpt["epoch"], self.ckpt.get("step", 0), self.ckpt.get("partial")

    def load_data(self):
        """The dataset the flags name and its (training, test) batches for this process."""
        from data import load_dataset

        a = self.args
        data = load_dataset(a.dataset, a.data_dir, a.cache_dir, a.subset, a.seed)
        return (data, *make_loaders(a, data, self.runtime, self.dist))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.stop is not None:
            self.stop.restore()
        if self.dist.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def open_run(args, kind, ckpt_name, log_name, config_name):
    """Check the flags, join the processes, pick the device and the checkpoint to resume.

    Nothing is written here: Run.begin() does that once the data and models are ready too,
    so bad input leaves old files alone.
    """
    check_shared_flags(args)
    dist = init_distributed(args.device)
    runtime = Runtime.from_args(args, dist)
    config = settings(args)
    ckpt_path = os.path.join(args.out_dir, ckpt_name)
    resume_from = resolve_resume(args, ckpt_path)
    ckpt = load_checkpoint(resume_from, kind=kind) if resume_from else None
    if ckpt:
        check_same_settings(ckpt["settings"], config, resume_from)
    return Run(args, dist, runtime, config, ckpt_path, resume_from, ckpt,
               files=(config_name, log_name))


# ----------------------------------------------------------------------------- logs

class JsonLog:
    """One JSON object per line; a resumed run appends, a fresh one starts a new file."""

    def __init__(self, path, fresh=False):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        if fresh and os.path.exists(path):
            os.remove(path)

    def write(self, **record):
        record.setdefault("time", round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------- data, evaluation

def make_loaders(args, data, runtime, dist=None):
    """The training batches (augmented, shuffled, last partial batch dropped) and test batches.

    --batch_size is the global batch: with N processes each takes batch_size / N images of
    its own share of the data, so the steps per epoch and the learning rate stay as they are.
    """
    from data import Augment, Batches, jitter_strengths

    dist = dist or Dist()
    aug = Augment(jitter_strengths(args.seed), flip=data.flip)
    common = dict(device=runtime.device, on_device=runtime.data_on_device,
                  memory_format=runtime.memory_format)
    train = Batches(data.train_x, data.train_y, dist.per_rank_batch(args.batch_size),
                    seed=args.seed, shuffle=True, drop_last=True, augment=aug, rank=dist.rank,
                    world_size=dist.world_size, **common)
    test = Batches(data.test_x, data.test_y, max(args.batch_size, 256), **common)
    if len(train) == 0:
        raise UserError(f"--batch_size {args.batch_size} is larger than the {len(data.train_y)} "
                        "training images: no full batch to train on")
    return train, test


@torch.inference_mode()
def evaluate(model, batches, runtime=None):
    """Accuracy (%) and mean cross-entropy of the class logits over every batch of the loader."""
    was_training = model.training
    model.eval()
    dev = batches.device
    loss_sum, correct, seen = (torch.zeros((), device=dev) for _ in range(3))
    autocast = runtime.autocast if runtime else contextlib.nullcontext
    for x, y in batches.epoch(0):
        with autocast():
            _, logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    model.train(was_training)
    n = seen.clamp(min=1)
    return (100 * correct / n).item(), (loss_sum / n).item()
