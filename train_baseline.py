"""Part 1, without the generator: the discriminator trained alone as a classifier.

    python train_baseline.py                          # CIFAR-10, the assignment's settings
    python train_baseline.py --data_dir ../shared/data/cifar10   # a PNG copy of CIFAR-10
    python train_baseline.py --resume                 # continue an interrupted run
    python train_baseline.py --dataset digits --width 32 --lr 1e-3 --epochs 15 --out_dir runs/demo

Adam (lr 1e-4), batch 128, 100 epochs, the learning rate divided by 10 at half the epochs and
by 100 at three quarters, cross-entropy on fc10 (87-89% CIFAR-10 test accuracy in the
assignment). Writes to --out_dir: cifar10.model (weights and settings, which visualize.py
loads), baseline.ckpt (every epoch, for --resume), baseline_log.jsonl, baseline_config.json
and baseline_curves.png. The last line on stdout is JSON with the final figures.
"""
import json
import os
import time

import torch
import torch.nn.functional as F

from checkpoints import atomic_save, load_state, save_model
from cli import ArgumentParser, Stopped, add_shared_flags, info, progress, run_main
from models import Discriminator
from pictures import plot_curves
from runtime import add_speed_flags, seed_everything
from training import adam_step_guard, evaluate, open_run

CHECKPOINT, MODEL_FILE, LOG, CONFIG = ("baseline.ckpt", "cifar10.model", "baseline_log.jsonl",
                                       "baseline_config.json")


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_flags(p, epochs=100, lr=1e-4, batch_size=128)
    add_speed_flags(p)
    return p


def lr_at(epoch, base_lr, epochs):
    """The assignment's schedule (/10 at epoch 50, /100 at 75 of 100), scaled to any length."""
    if epoch >= int(0.75 * epochs):
        return base_lr / 100
    if epoch >= int(0.5 * epochs):
        return base_lr / 10
    return base_lr


def train_step(model, optimizer, x, y, runtime, step_cap=1024):
    """One Adam step of cross-entropy on fc10; returns (loss, correct predictions) as tensors."""
    with runtime.autocast():
        _, logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    adam_step_guard(optimizer, step_cap)
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def train_one_epoch(model, optimizer, batches, epoch, runtime, *, start=0, sums=None,
                    stop=None, step_cap=1024, log_every=50, log=None):
    """Train from batch `start` of the epoch to its end, or until stop(step) says so.

    sums carries (loss sum, correct, images) of the batches before `start` (a run resumed
    mid-epoch). Returns (next batch index, sums): the epoch is complete when the index equals
    len(batches).
    """
    model.train()
    dev, steps = batches.device, len(batches)
    sums = torch.zeros(3, device=dev) if sums is None else sums.to(dev)
    i = start
    for i, (x, y) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                        f"epoch {epoch + 1}"), start):
        loss, hits = train_step(model, optimizer, x, y, runtime, step_cap)
        # Running sums stay on the device: no host sync until a line is printed.
        sums[0] += loss * len(y)  # in place, with Python scalars: no host-device copies
        sums[1] += hits
        sums[2] += len(y)
        if log is not None and (i + 1) % log_every == 0:
            loss_mean, acc = (sums[0] / sums[2]).item(), (100 * sums[1] / sums[2]).item()
            info(f"epoch {epoch + 1} step {i + 1}/{steps} loss {loss_mean:.4f} acc {acc:.2f}")
            log.write(event="step", epoch=epoch + 1, step=i + 1, loss=round(loss_mean, 4),
                      acc=round(acc, 2))
        if stop is not None and i + 1 < steps and stop(i, dev):
            return i + 1, sums
    return steps, sums


def save_checkpoint(path, model, optimizer, epoch, step, sums, config, history, seconds):
    """Everything --resume needs, as state dicts and plain data.

    epoch counts completed epochs; step > 0 marks a checkpoint written mid-epoch (on a
    signal), with the running sums of that epoch so far.
    """
    atomic_save({"kind": "baseline", "epoch": epoch, "step": step,
                 "partial": None if sums is None else sums.detach().cpu(),
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "settings": config, "history": history, "seconds": seconds}, path)


def run(args):
    """Train as the flags say; returns (final figures, trained model)."""
    with open_run(args, "baseline", CHECKPOINT, LOG, CONFIG) as r:
        return _train(args, r)


def _train(args, r):
    rt, dist = r.runtime, r.dist
    data, train, test = r.load_data()
    seed_everything(args.seed)
    model = rt.module(Discriminator(args.width, data.num_classes))
    model.fc1.requires_grad_(False)  # the critic head plays no part here (and DDP needs to know)
    optimizer = rt.adam(model.parameters(), lr=args.lr)
    start_epoch, start_step, partial = r.position()
    history, seconds = [], 0.0
    if r.ckpt:
        load_state(model, r.ckpt["model"], r.resume_from)
        load_state(optimizer, r.ckpt["optimizer"], r.resume_from, "optimizer state")
        history, seconds = r.ckpt["history"], r.ckpt["seconds"]
    # What the step runs through: DDP for several processes, compiled on the fast path.
    # It shares the parameters with `model`, which is what gets saved.
    fast = rt.compiled(dist.wrap(model, rt.device))
    r.begin()
    r.say(f"{data.name}: {len(data.train_y)} training, {len(data.test_y)} test images; "
          f"{len(train)} steps per epoch on {rt.device}")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, args.lr, args.epochs)
        step, sums = train_one_epoch(fast, optimizer, train, epoch, rt, start=start_step,
                                     sums=partial, stop=r.stop, step_cap=args.adam_step_cap,
                                     log_every=args.log_every, log=r.log)
        seconds += time.time() - t0
        start_step, partial = 0, None
        if step < len(train):  # stopped on a signal
            if dist.is_main:
                save_checkpoint(r.ckpt_path, model, optimizer, epoch, step, sums, r.config,
                                history, seconds)
            raise Stopped(f"stopped at epoch {epoch + 1}, step {step}; resume with --resume "
                          f"(checkpoint {r.ckpt_path})")
        sums = dist.all_sum(sums)
        train_loss, train_acc = (sums[0] / sums[2]).item(), (100 * sums[1] / sums[2]).item()
        if not dist.is_main:
            continue
        test_acc, test_loss = evaluate(model, test, rt)
        dt = time.time() - t0
        rec = dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"],
                   train_loss=round(train_loss, 4), train_acc=round(train_acc, 2),
                   test_loss=round(test_loss, 4), test_acc=round(test_acc, 2),
                   seconds=round(dt, 2))
        history.append(rec)
        r.log.write(event="epoch", **rec)
        info(f"epoch {epoch + 1}/{args.epochs} train acc {train_acc:.2f} test acc {test_acc:.2f} "
             f"({dt:.1f}s)")
        save_checkpoint(r.ckpt_path, model, optimizer, epoch + 1, 0, None, r.config, history,
                        seconds)
        plot_curves(history, [("cross-entropy", ["train_loss", "test_loss"]),
                              ("accuracy (%)", ["train_acc", "test_acc"])],
                    os.path.join(args.out_dir, "baseline_curves.png"), "baseline classifier")

    final = history[-1] if history else {}
    metrics = dict(test_acc=final.get("test_acc"), train_acc=final.get("train_acc"),
                   epochs=args.epochs, seconds=round(seconds, 1),
                   model=os.path.join(args.out_dir, MODEL_FILE))
    if dist.is_main:
        save_model(metrics["model"], model, "discriminator", r.config, metrics, data.classes,
                   "train_baseline.py")
    return metrics, model


def main(argv=None):
    args = build_parser().parse_args(argv)
    metrics, _ = run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(dict(script="train_baseline", dataset=args.dataset, **metrics)),
              flush=True)
    return metrics


if __name__ == "__main__":
    run_main(main)
