"""What the trainers share: the run (processes joined, checkpoint found, log opened), the one
epoch loop (steps, progress, logs, the NaN guard, stops, checkpoints), the batches, evaluation
and the Adam step guard. A trainer is what utils.trainer.Trainer declares (train_baseline.py,
train_gan.py, train_simclr.py); open_run checks it.
"""
import contextlib
import copy
import json
import os
import time
import uuid
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from utils import runfiles
from utils.checkpoints import (PROGRESS_FIELDS, atomic_save, check_same_data, check_same_settings,
                               data_identity, load_checkpoint, resolve_resume, run_id_of)
from utils.console import info, progress
from utils.errors import Diverged, Stopped, UserError
from utils.distributed import Dist, StopSignal, init_distributed
from utils.errors import EXIT_INTERRUPTED, EXIT_STOPPED
from utils.rundir import JsonLog, RunFolder, TensorBoardLog, check_resume_target
from utils.runtime import Runtime, peak_memory_mib, reset_peak_memory
from utils.settings import Settings
from utils.trainer import check_trainer

PLOT_SECONDS = 60.0


def adam_step_guard(optimizer, cap=1024, reset=None):
    """The assignment's guard against Adam's step count growing without bound.

    Any parameter whose step has reached `cap` is set back to `reset` (default cap - 24, the
    assignment's 1024 -> 1000; at least 1). Current PyTorch keeps the step as a tensor (on the
    CPU, or on the GPU for fused/capturable Adam); it is changed in place, with no host-device
    sync.
    """
    if not cap or not isinstance(optimizer, torch.optim.Adam):
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


class DivergenceGuard:
    """Notes on the device the first step whose loss is NaN or infinite; read back only
    when checked (every --log_every steps, at an epoch's end, before stopping)."""

    def __init__(self, device):
        self.first_bad = torch.full((), -1.0, device=device)

    def watch(self, loss, step):
        bad = ~torch.isfinite(loss)
        self.first_bad = torch.where(bad & (self.first_bad < 0), float(step), self.first_bad)

    def check(self, dist, epoch):
        # one rank's NaN reaches every rank's weights: all stop together
        step = int(dist.all_max(self.first_bad.clone()).item())
        if step >= 0:
            raise Diverged(f"a loss became NaN or infinite at epoch {epoch + 1}, step {step + 1}")


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """What a training script sets up before it touches data or models, and the epoch loop."""
    settings: Settings
    dist: Dist
    runtime: Runtime
    config: dict
    kind: str  # the trainer's: its files are KIND.ckpt, KIND_log.jsonl and KIND_config.json
    ckpt_path: str
    resume_from: str = None
    ckpt: dict = None
    folder: RunFolder = None  # the run folder (rank 0 holds its lock)
    tensorboard: object = None  # rank 0's TensorBoardLog with --tensorboard
    steps_per_epoch: int = 0
    run_id: str = None  # the same through every resumption of a run
    data_id: dict = None  # what the data is (name, classes, sizes, fingerprint)
    begun: bool = False
    started: float = field(default_factory=time.monotonic)
    log: object = None  # the JSON-lines log; None on every rank but 0
    stop: object = None
    history: list = field(default_factory=list)  # one record per completed epoch
    seconds: float = 0.0  # training time so far, over every resumption
    saved_at: tuple = None  # (epoch, step) of the last checkpoint on disk
    jitter: tuple = None  # the training augmentation's colour jitter strengths
    plotted: tuple = (0, float("-inf"))  # (epochs in the curves, when they were drawn)

    def begin(self):
        """Once the data and models are ready: print and save the settings, open the log.
        Nothing is written before this (a fresh run over an earlier one writes staged files
        until its first output: utils/rundir.py)."""
        if self.stop.received is not None:  # a signal came while the run was starting
            raise Stopped(f"received {self.stop.received_name()} while starting, before any "
                          "training: nothing to save; run the same command again",
                          EXIT_INTERRUPTED if self.stop.interrupted else EXIT_STOPPED)
        if self.dist.is_main:
            info("settings: " + json.dumps(self.config))
            info("runtime: " + json.dumps(dict(self.runtime.describe(),
                                                processes=self.dist.world_size)))
            if self.jitter is not None:
                names = ("brightness", "contrast", "saturation", "hue")
                info(f"colour jitter ({self.settings.data.color_jitter}): " + ", ".join(
                    f"{n} {s:.3f}" if s else f"{n} off" for n, s in zip(names, self.jitter)))
            if not self.ckpt:
                self.folder.begin_fresh()
            self.folder.settings_file(self.config)
            position = (self.ckpt["epoch"], self.ckpt["step"]) if self.ckpt else None
            if self.settings.loop.tensorboard:
                self.tensorboard = TensorBoardLog(self.settings.loop.out_dir, self.kind,
                                                  self.steps_per_epoch, resume_at=position)
                info(f"TensorBoard events: {self.tensorboard.folder} (tensorboard --logdir "
                     f"{os.path.join(self.settings.loop.out_dir, 'tensorboard')})")
                if not self.folder.staging:  # else once the earlier run's files are gone
                    self.tensorboard.open()
            self.log = JsonLog(self.folder, runfiles.log(self.kind), resume_at=position,
                               tensorboard=self.tensorboard)
        self.begun = True
        if self.ckpt:
            epochs = self.settings.loop.epochs
            self.history, self.seconds = self.ckpt["history"], self.ckpt["seconds"]
            self.saved_at = (self.ckpt["epoch"], self.ckpt["step"])
            if self.ckpt["epoch"] >= epochs:
                self.say(f"{self.resume_from} is finished ({self.ckpt['epoch']} of "
                         f"{epochs} epochs): nothing left to train (a larger --epochs "
                         "trains on)")
            else:
                before = self.ckpt["settings"].get("epochs", epochs)
                longer = (f", training longer: --epochs {before} -> {epochs}"
                          if epochs != before else "")
                self.say(f"resuming {self.resume_from} at epoch {self.ckpt['epoch'] + 1}, "
                         f"step {self.ckpt['step']}{longer}")
        self.stop.announce()

    def say(self, message):
        if self.dist.is_main:
            info(message)

    def load_data(self):
        """The dataset the flags name and its (training, test) batches for this process."""
        from utils.data import load_dataset

        s, d = self.settings, self.settings.data
        data = load_dataset(d.dataset, d.data_dir, d.cache_dir, d.subset, s.seed,
                            d.labels_per_class)
        self.data_id = data_identity(data)
        if self.ckpt:
            check_same_data(self.ckpt.get("data"), self.data_id, self.resume_from)
        train, test = make_loaders(d, s.seed, data, self.runtime, self.dist)
        self.steps_per_epoch = len(train)
        if train.augment is not None and train.augment.crop:
            self.jitter = train.augment.strengths
        return data, train, test

    def save(self, trainer, epoch, step=0, sums=None):
        """The checkpoint (rank 0): where training stands, the settings, the history and the
        trainer's state dicts, written atomically."""
        if not self.dist.is_main:
            return
        self.outputs_begin()
        try:
            atomic_save({"kind": trainer.kind, "epoch": epoch, "step": step,
                         "partial": None if sums is None else sums.detach().cpu(),
                         "settings": self.config, "history": self.history,
                         "seconds": self.seconds, "run_id": self.run_id, "data": self.data_id,
                         **trainer.state()}, self.ckpt_path)
        except UserError as e:  # a full disk: the last checkpoint is still whole
            raise UserError(f"{e}; {self.kept()}: free some space, then resume with "
                            "--resume") from None
        self.saved_at = (epoch, step)

    def outputs_begin(self):
        """Before the run's first output (rank 0): a fresh run replaces the earlier run's
        files now (utils/rundir.py)."""
        self.folder.replace_earlier()
        if self.tensorboard is not None:
            self.tensorboard.open()

    def kept(self):
        """Which checkpoint a failed run leaves behind, in words."""
        if self.saved_at is None:
            return "no checkpoint had been written yet"
        epoch, step = self.saved_at
        where = f"after epoch {epoch}" if not step else f"epoch {epoch + 1}, step {step}"
        return f"the last good checkpoint ({where}) is kept at {self.ckpt_path}"

    def fit(self, trainer, train):
        """The epoch loop of every trainer: from where the checkpoint stands to --epochs.

        Stops with a checkpoint (Stopped, exit 75) mid-epoch on a stop request, or after an
        epoch that a request arrived at the end of; stops on a NaN or infinite loss
        (Diverged, exit 3) keeping the last good checkpoint.
        """
        epochs = self.settings.loop.epochs
        start_epoch, start_step, partial = 0, 0, None
        if self.ckpt:
            start_epoch, start_step = self.ckpt["epoch"], self.ckpt["step"]
            partial = self.ckpt["partial"] if start_step else None
        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            reset_peak_memory(self.runtime.device)
            trainer.begin_epoch(epoch)
            try:
                step, sums = self.train_epoch(trainer, train, epoch, start_step, partial)
            except Diverged as e:
                if self.log is not None:
                    self.log.write(event="diverged", message=str(e))
                raise Diverged(f"{e}; training stopped and {self.kept()}") from None
            self.seconds += time.time() - t0
            start_step, partial = 0, None
            if step < len(train):  # asked to stop mid-epoch
                self.save(trainer, epoch, step, sums)
                self.plot(trainer, now=True)
                raise Stopped(f"stopped at epoch {epoch + 1}, step {step}; resume with "
                              f"--resume (checkpoint {self.ckpt_path})", self.stop_code())
            means = trainer.means(self.dist.all_sum(sums))
            if self.dist.is_main:
                self.outputs_begin()
                try:
                    record, text, pictures = trainer.end_epoch(epoch, means, time.time() - t0,
                                                                self.history)
                except UserError as e:  # a grid could not be written: a full disk
                    raise UserError(f"{e}; {self.kept()}: free some space, then resume with "
                                    "--resume") from None
                # the epoch's peak memory: growth from epoch to epoch would be a leak
                peak = peak_memory_mib(self.runtime.device)
                record = dict(epoch=epoch + 1, **record, seconds=round(time.time() - t0, 2),
                              peak_mib=round(peak, 1) if peak == peak else None)
                self.history.append(record)
                info(f"epoch {epoch + 1}/{epochs} {text} ({record['seconds']:.1f}s, "
                     f"peak {peak:.0f} MiB)")
                if self.tensorboard is not None:
                    for tag, (images, nrow) in pictures.items():
                        self.tensorboard.image(tag, images, epoch + 1, nrow=nrow)
                self.save(trainer, epoch + 1)  # first the checkpoint, then the log: the log
                self.log.write(event="epoch", **record)  # never holds an unsaved epoch
                self.plot(trainer, now=epoch + 1 == epochs)
            if epoch + 1 < epochs and self.stop.settle():
                self.plot(trainer, now=True)
                raise Stopped(f"stopped after epoch {epoch + 1}; resume with --resume "
                              f"(checkpoint {self.ckpt_path})", self.stop_code())
        return self.history[-1] if self.history else {}

    def stop_code(self):
        return EXIT_INTERRUPTED if self.stop.interrupted else EXIT_STOPPED

    def plot(self, trainer, now=False):
        """Redraw the curves (rank 0) when they lack epochs and, unless `now`, were last
        drawn PLOT_SECONDS ago."""
        done, when = self.plotted
        if (self.dist.is_main and len(self.history) > done
                and (now or time.monotonic() - when >= PLOT_SECONDS)):
            try:
                trainer.plot(self.history)
            except UserError as e:  # the curves are redrawn next time; training goes on
                info(f"warning: the curves were not drawn ({e})")
            self.plotted = (len(self.history), time.monotonic())

    def train_epoch(self, trainer, batches, epoch, start=0, sums=None):
        """Train from batch `start` of the epoch to its end, or until a stop request.

        sums carries the running sums of the batches before `start` (a run resumed mid-epoch);
        they stay on the device, read only every --log_every steps. Returns (next batch index,
        sums): the epoch is complete when the index equals len(batches).
        """
        dev, steps, every = batches.device, len(batches), self.settings.loop.log_every
        sums = torch.zeros(trainer.sums_width, device=dev) if sums is None else sums.to(dev)
        guard = DivergenceGuard(dev)
        for i, (x, y) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                            f"epoch {epoch + 1}"), start):
            guard.watch(trainer.step(i, x, y, sums), i)
            stopping = i + 1 < steps and self.stop is not None and self.stop()
            if (i + 1) % every == 0 or i + 1 == steps or stopping:
                guard.check(self.dist, epoch)
                if self.log is not None and (i + 1) % every == 0:
                    means = trainer.means(sums)
                    info(f"epoch {epoch + 1} step {i + 1}/{steps} " +
                         " ".join(f"{k} {v:.4g}" for k, v in means.items()))
                    self.log.write(event="step", epoch=epoch + 1, step=i + 1, **means)
            if stopping:
                return i + 1, sums
        return steps, sums

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Every rank reaches the end, a stop or a divergence together; any other error may be
        # one rank's alone, and waiting for the others there would hang.
        try:
            if self.tensorboard is not None:
                self.tensorboard.close()
            self.close(together=exc_type is None or issubclass(exc_type, (Stopped, Diverged)))
        finally:
            if self.folder is not None:
                self.folder.release(failed_early=exc_type is not None and not self.begun)

    def close(self, together=True):
        """Leave the process group. When all ranks got here together, first finish the stop
        agreement still under way and wait for every rank: a rank that tears gloo down while
        another still talks to it (or whose TCP store has gone) aborts the process."""
        if self.stop is not None:
            if together:
                self.stop.finish()
            self.stop.restore()
        if self.dist.enabled and torch.distributed.is_initialized():
            if together:
                torch.distributed.barrier(group=self.dist.cpu_group)
            torch.distributed.destroy_process_group()


def open_run(settings, trainer):
    """Join the processes, pick the device and the checkpoint to resume (settings: the
    command's resolved Settings).

    trainer (a class) names the files (its kind) and the checkpoint's entries beyond where
    training stands, which are checked before anything is used. Nothing is written here:
    Run.begin() does that once the data and models are ready too, so bad input leaves old
    files alone.
    """
    check_trainer(trainer)
    started = time.monotonic()
    loop = settings.loop
    stop = StopSignal(stop_file=loop.stop_file, time_limit=loop.time_limit, started=started)
    folder = RunFolder(loop.out_dir, trainer.kind, trainer.products, trainer.patterns)
    try:
        dist = init_distributed(settings.runtime.device)
        stop.attach(dist)
        runtime = Runtime.from_settings(settings.runtime, dist)
        config = settings.flat()
        folder.take(main=dist.is_main)
        resume_from = resolve_resume(loop.resume, loop.overwrite, folder)
        ckpt = None
        if resume_from:
            ckpt = load_checkpoint(resume_from, trainer.kind,
                                   {**PROGRESS_FIELDS, **trainer.fields})
            partial = ckpt["partial"]
            if ckpt["step"] and (partial is None or partial.numel() != trainer.sums_width):
                raise UserError(f"{resume_from} is damaged: a checkpoint written mid-epoch "
                                f"needs {trainer.sums_width} running sums, it holds "
                                f"{0 if partial is None else partial.numel()}")
            check_same_settings(ckpt["settings"], config, resume_from)
            if loop.epochs < ckpt["epoch"]:
                raise UserError(f"--epochs {loop.epochs}: {resume_from} has trained "
                                f"{ckpt['epoch']} epochs already; pass --epochs "
                                f"{ckpt['epoch']} or more")
            check_resume_target(folder, resume_from, run_id_of)
    except BaseException:
        stop.restore()
        folder.release(failed_early=True)
        raise
    run_id = (ckpt or {}).get("run_id") or uuid.uuid4().hex
    return Run(settings, dist, runtime, config, trainer.kind, folder.ckpt, resume_from, ckpt,
               folder=folder, run_id=run_id, started=started, stop=stop)


# ----------------------------------------------------------------------------- data, evaluation

def make_loaders(options, seed, data, runtime, dist=None):
    """The training batches (augmented; shuffled and the last partial batch dropped unless
    the DataSettings `options` say otherwise) and test batches of the ImageData `data`.

    --batch_size is the global batch: with N processes each takes batch_size / N images of
    its own share of the data, so the steps per epoch and the learning rate stay as they are.
    """
    from utils.augment import Augment, jitter_strengths
    from utils.data import Batches

    dist = dist or Dist()
    kind = options.augment
    aug = None
    if kind != "none":  # 'flip' keeps only the horizontal flip (where the dataset allows it)
        strengths = jitter_strengths(seed, options.color_jitter if kind == "assignment"
                                     else "off")
        aug = Augment(strengths, flip=data.flip, size=data.image_size,
                      crop=kind == "assignment")
    common = dict(device=runtime.device, on_device=runtime.data_on_device,
                  memory_format=runtime.memory_format)
    train = Batches(data.train_x, data.train_y, dist.per_rank_batch(options.batch_size),
                    seed=seed, shuffle=options.shuffle == "on",
                    drop_last=options.drop_last == "on",
                    min_last=2,  # BatchNorm cannot train on a batch of one image
                    augment=aug, rank=dist.rank, world_size=dist.world_size, **common)
    test = Batches(data.test_x, data.test_y, max(options.batch_size, 256), **common)
    if len(train) == 0:
        raise UserError(f"--batch_size {options.batch_size} is larger than the {len(data.train_y)} "
                        "training images: no full batch to train on")
    return train, test


@torch.inference_mode()
def evaluate(model, batches, runtime=None, per_class=False, batch_statistics=False):
    """Accuracy (%) and mean cross-entropy of the class logits over every batch of the loader;
    with per_class also each class's accuracy (%, in class order; None for a class with no
    test image).

    batch_statistics: BatchNorm normalises each test batch by that batch's own statistics
    (the network in training mode: the batch-normalization lesson's counter-example), on a
    copy, so the model's running statistics stay as they were."""
    if batch_statistics:
        model = copy.deepcopy(model).train()
    was_training = model.training
    if not batch_statistics:
        model.eval()
    dev = batches.device
    loss_sum, correct, seen = (torch.zeros((), device=dev) for _ in range(3))
    classes = model.num_classes if per_class else 0
    hits_by_class = torch.zeros(classes, device=dev)
    seen_by_class = torch.zeros(classes, device=dev)
    autocast = runtime.autocast if runtime else contextlib.nullcontext
    for x, y in batches.epoch(0):
        with autocast():
            _, logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        hit = logits.argmax(1) == y
        correct += hit.sum()
        seen += len(y)
        if classes:  # on the device with no sync (no boolean indexing), read back at the end
            hits_by_class += torch.bincount(y, weights=hit.float(), minlength=classes)
            seen_by_class += torch.bincount(y, minlength=classes)
    model.train(was_training)
    n = seen.clamp(min=1)
    acc, loss = (100 * correct / n).item(), (loss_sum / n).item()
    if not per_class:
        return acc, loss
    by_class = [None if s == 0 else round(100 * h / s, 2)
                for h, s in zip(hits_by_class.tolist(), seen_by_class.tolist())]
    return acc, loss, by_class
