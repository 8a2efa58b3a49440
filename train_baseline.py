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

from data import load_dataset
from models import Discriminator
from utils import (ArgumentParser, JsonLog, UserError, adam_step_guard, add_shared_flags,
                   atomic_save, check_same_settings, check_shared_flags, evaluate, info,
                   load_checkpoint, load_state, make_loaders, plot_curves, progress, resolve_device, resolve_resume,
                   run_main, save_model, seed_everything, settings, write_settings)

CHECKPOINT, MODEL_FILE, LOG, CONFIG = ("baseline.ckpt", "cifar10.model", "baseline_log.jsonl",
                                       "baseline_config.json")


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_flags(p, epochs=100, lr=1e-4, batch_size=128)
    return p


def lr_at(epoch, base_lr, epochs):
    """The assignment's schedule (/10 at epoch 50, /100 at 75 of 100), scaled to any length."""
    if epoch >= int(0.75 * epochs):
        return base_lr / 100
    if epoch >= int(0.5 * epochs):
        return base_lr / 10
    return base_lr


def train_one_epoch(model, optimizer, batches, epoch, *, start=0, step_cap=1024, log_every=50,
                    log=None):
    """One pass of cross-entropy on fc10; returns the epoch's mean loss and accuracy (%)."""
    model.train()
    dev = batches.device
    loss_sum, correct, seen = (torch.zeros((), device=dev) for _ in range(3))
    steps = len(batches)
    for i, (x, y) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                        f"epoch {epoch}"), start):
        _, logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        adam_step_guard(optimizer, step_cap)
        # Running sums stay on the device: no host sync until a line is printed.
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if log is not None and (i + 1) % log_every == 0:
            rec = dict(epoch=epoch, step=i + 1, loss=round((loss_sum / seen).item(), 4),
                       acc=round((100 * correct / seen).item(), 2))
            info(f"epoch {epoch} step {i + 1}/{steps} loss {rec['loss']:.4f} acc {rec['acc']:.2f}")
            log.write(event="step", **rec)
    n = seen.clamp(min=1)
    return (loss_sum / n).item(), (100 * correct / n).item()


def save_checkpoint(path, model, optimizer, epoch, config, history, seconds):
    """Everything --resume needs, as state dicts and plain data."""
    atomic_save({"kind": "baseline", "epoch": epoch, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "settings": config, "history": history,
                 "seconds": seconds}, path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    check_shared_flags(args)
    device = resolve_device(args.device)
    config = settings(args)
    ckpt_path = os.path.join(args.out_dir, CHECKPOINT)
    resume_from = resolve_resume(args, ckpt_path)
    ckpt = load_checkpoint(resume_from, kind="baseline") if resume_from else None
    if ckpt:
        check_same_settings(ckpt["settings"], config, resume_from)

    data = load_dataset(args.dataset, args.data_dir, args.cache_dir, args.subset, args.seed)
    train, test = make_loaders(args, data, device)
    seed_everything(args.seed)
    model = Discriminator(args.width, data.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, history, seconds = 0, [], 0.0
    if ckpt:
        load_state(model, ckpt["model"], resume_from)
        load_state(optimizer, ckpt["optimizer"], resume_from, "optimizer state")
        start_epoch, history, seconds = ckpt["epoch"], ckpt["history"], ckpt["seconds"]
        info(f"resuming {resume_from} after epoch {start_epoch}")

    info("settings: " + json.dumps(config))
    write_settings(args, os.path.join(args.out_dir, CONFIG))
    log = JsonLog(os.path.join(args.out_dir, LOG))
    info(f"{data.name}: {len(data.train_y)} training, {len(data.test_y)} test images; "
         f"{len(train)} steps per epoch on {device}")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, args.lr, args.epochs)
        train_loss, train_acc = train_one_epoch(model, optimizer, train, epoch,
                                                step_cap=args.adam_step_cap,
                                                log_every=args.log_every, log=log)
        test_acc, test_loss = evaluate(model, test)
        dt = time.time() - t0
        seconds += dt
        rec = dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"],
                   train_loss=round(train_loss, 4), train_acc=round(train_acc, 2),
                   test_loss=round(test_loss, 4), test_acc=round(test_acc, 2),
                   seconds=round(dt, 2))
        history.append(rec)
        log.write(event="epoch", **rec)
        info(f"epoch {epoch + 1}/{args.epochs} train acc {train_acc:.2f} test acc {test_acc:.2f} "
             f"({dt:.1f}s)")
        save_checkpoint(ckpt_path, model, optimizer, epoch + 1, config, history, seconds)
        plot_curves(history, [("cross-entropy", ["train_loss", "test_loss"]),
                              ("accuracy (%)", ["train_acc", "test_acc"])],
                    os.path.join(args.out_dir, "baseline_curves.png"), "baseline classifier")

    final = history[-1] if history else {}
    metrics = dict(test_acc=final.get("test_acc"), train_acc=final.get("train_acc"),
                   epochs=args.epochs, seconds=round(seconds, 1))
    model_path = os.path.join(args.out_dir, MODEL_FILE)
    save_model(model_path, model, "discriminator", config, metrics, data.classes,
               "train_baseline.py")
    print(json.dumps(dict(script="train_baseline", dataset=data.name, model=model_path, **metrics)),
          flush=True)
    return metrics


if __name__ == "__main__":
    run_main(main)
