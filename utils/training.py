"""The one epoch loop every trainer (utils.trainer.Trainer) runs through, the run it lives
in, the batches, evaluation and IE 534's Adam step guard."""
import contextlib
import copy
import time
import uuid
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from utils.checkpoints import (NUMERICS, PROGRESS_FIELDS, check_same_data, check_same_settings,
                               data_identity, load_checkpoint, resolve_resume, run_id_of,
                               save_model)
from utils.console import info, progress
from utils.distributed import Dist, StopSignal, init_distributed, leave_group
from utils.errors import EXIT_INTERRUPTED, EXIT_STOPPED, Diverged, Stopped, UserError
from utils.recorder import Recorder
from utils.rundir import RunFolder, check_resume_target
from utils.runtime import Runtime, peak_memory_mib, reset_peak_memory
from utils.settings import Settings
from utils.trainer import check_trainer


def adam_step_guard(optimizer, cap=1024, reset=None):
    """The assignment's guard against Adam's step count growing without bound: a step that
    reached `cap` is set back to `reset` (default cap - 24: 1024 -> 1000), in place on a
    tensor step (no host-device sync)."""
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


def descend(optimizer, loss, step_cap):
    """One step of the optimizer down the loss's gradient, under the assignment's step guard."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    adam_step_guard(optimizer, step_cap)


class DivergenceGuard:
    """The first step whose loss is NaN or infinite, kept on the device until checked."""

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
    """A training script's run: its processes, device, stop signal, checkpoint to resume and
    Recorder, set up before any data or model; load_data, begin, then fit (the epoch loop)."""
    settings: Settings
    dist: Dist
    runtime: Runtime
    stop: StopSignal
    records: Recorder
    resume_from: str = None
    ckpt: dict = None
    data_id: dict = None  # what the data is (name, classes, sizes, fingerprint)
    steps_per_epoch: int = 0
    jitter: tuple = None  # the training augmentation's colour jitter strengths
    begun: bool = False
    history: list = field(default_factory=list)  # one record per completed epoch
    seconds: float = 0.0  # training time so far, over every resumption

    @property
    def config(self):
        return self.records.config

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

    def begin(self, trainer):
        """Once the data and models are ready: the trainer's state from the checkpoint when
        resuming, then print and save the settings, open the logs. Nothing is written before
        this (a fresh run over an earlier one writes staged files until its first output:
        utils/rundir.py)."""
        if self.ckpt:
            trainer.load(self.ckpt, self.resume_from)
        if self.stop.received is not None:  # a signal came while the run was starting
            raise Stopped(f"received {self.stop.received_name()} while starting, before any "
                          "training: nothing to save; run the same command again",
                          EXIT_INTERRUPTED if self.stop.interrupted else EXIT_STOPPED)
        position = (self.ckpt["epoch"], self.ckpt["step"]) if self.ckpt else None
        if self.dist.is_main:
            self.records.settings_line(dict(self.runtime.describe(),
                                            processes=self.dist.world_size))
            if self.jitter is not None:
                names = ("brightness", "contrast", "saturation", "hue")
                info(f"colour jitter ({self.settings.data.color_jitter}): " + ", ".join(
                    f"{n} {s:.3f}" if s else f"{n} off" for n, s in zip(names, self.jitter)))
        self.records.open(self.settings.loop.tensorboard, self.steps_per_epoch, position)
        self.begun = True
        if self.ckpt:
            self.history, self.seconds = self.ckpt["history"], self.ckpt["seconds"]
            self.say(self.resuming())
        self.stop.announce()

    def resuming(self):
        epochs, done = self.settings.loop.epochs, self.ckpt["epoch"]
        if done >= epochs:
            return (f"{self.resume_from} is finished ({done} of {epochs} epochs): nothing left "
                    "to train (a larger --epochs trains on)")
        saved, now = self.ckpt["settings"], self.settings.flat()
        before = saved.get("epochs", epochs)
        how = "training longer" if epochs > before else "ending sooner"
        length = f", {how}: --epochs {before} -> {epochs}" if epochs != before else ""
        changed = [f"--{k} {saved[k]} -> {now[k]}" for k in NUMERICS
                   if k in saved and k in now and saved[k] != now[k]]
        numerics = (f"; {', '.join(changed)}: allowed, but the numbers will not be bit for bit "
                    "those of a run that never stopped") if changed else ""
        return (f"resuming {self.resume_from} at epoch {done + 1}, step {self.ckpt['step']}"
                f"{length}{numerics}")

    def say(self, message):
        if self.dist.is_main:
            info(message)

    def save(self, trainer, epoch, step=0, sums=None):
        """The checkpoint: where training stands, the history and the trainer's state."""
        self.records.checkpoint({"kind": trainer.kind, "history": self.history,
                                 "partial": None if sums is None else sums.detach().cpu(),
                                 "seconds": self.seconds, "data": self.data_id,
                                 **trainer.state()}, epoch, step)

    def save_model(self, path, module, metrics, classes, made_by):
        """A finished run's model file, with the run's settings: written by rank 0 alone."""
        if self.dist.is_main:
            save_model(path, module, self.config, metrics, classes, made_by)

    def fit(self, trainer, train):
        """The epoch loop: from where the checkpoint stands to --epochs. A stop request stops
        it with a checkpoint (Stopped); a NaN loss stops it keeping the last one (Diverged)."""
        epochs, rec = self.settings.loop.epochs, self.records
        start_epoch, start_step = (self.ckpt["epoch"], self.ckpt["step"]) if self.ckpt else (0, 0)
        partial = self.ckpt["partial"] if start_step else None
        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            reset_peak_memory(self.runtime.device)
            trainer.begin_epoch(epoch)
            try:
                step, sums = self.train_epoch(trainer, train, epoch, start_step, partial)
            except Diverged as e:
                rec.write(event="diverged", message=str(e))
                raise Diverged(f"{e}; training stopped and {rec.kept()}") from None
            self.seconds += time.time() - t0
            start_step, partial = 0, None
            if step < len(train):  # asked to stop mid-epoch
                self.save(trainer, epoch, step, sums)
                self.stopped(trainer, f"stopped at epoch {epoch + 1}, step {step}")
            means = trainer.means(self.dist.all_sum(sums))
            if self.dist.is_main:
                self.end_epoch(trainer, epoch, means, t0)
            if epoch + 1 < epochs and self.stop.settle():
                self.stopped(trainer, f"stopped after epoch {epoch + 1}")
        return self.history[-1] if self.history else {}

    def end_epoch(self, trainer, epoch, means, t0):
        """Rank 0 after an epoch: the trainer's evaluation, then the checkpoint, then the log
        (the log never holds an unsaved epoch), then maybe the curves."""
        rec = self.records
        rec.outputs_begin()
        try:
            record, text, pictures = trainer.end_epoch(epoch, means, time.time() - t0,
                                                        self.history)
        except UserError as e:  # a grid could not be written: a full disk
            raise rec.failed(e) from None
        # the epoch's peak memory: growth from epoch to epoch would be a leak
        peak = peak_memory_mib(self.runtime.device)
        record = dict(epoch=epoch + 1, **record, seconds=round(time.time() - t0, 2),
                      peak_mib=round(peak, 1) if peak == peak else None)
        self.history.append(record)
        info(f"epoch {epoch + 1}/{self.settings.loop.epochs} {text} "
             f"({record['seconds']:.1f}s, peak {peak:.0f} MiB)")
        rec.pictures(pictures, epoch + 1)
        self.save(trainer, epoch + 1)
        rec.write(event="epoch", **record)
        rec.plot(trainer, self.history, now=epoch + 1 == self.settings.loop.epochs)

    def stopped(self, trainer, where):
        self.records.plot(trainer, self.history, now=True)
        raise Stopped(f"{where}; resume with --resume (checkpoint {self.records.folder.ckpt})",
                      EXIT_INTERRUPTED if self.stop.interrupted else EXIT_STOPPED)

    def train_epoch(self, trainer, batches, epoch, start=0, sums=None):
        """Train from batch `start` to the epoch's end or a stop request; returns (next batch
        index, sums). sums (on the device, read every --log_every steps) carries the batches
        before `start` of a run resumed mid-epoch."""
        dev, steps, every = batches.device, len(batches), self.settings.loop.log_every
        sums = torch.zeros(trainer.sums_width, device=dev) if sums is None else sums.to(dev)
        guard = DivergenceGuard(dev)
        for i, (x, y) in enumerate(progress(batches.epoch(epoch, start), steps - start,
                                            f"epoch {epoch + 1}"), start):
            guard.watch(trainer.step(i, x, y, sums), i)
            stopping = i + 1 < steps and self.stop()
            if (i + 1) % every == 0 or i + 1 == steps or stopping:
                guard.check(self.dist, epoch)
                if self.dist.is_main and (i + 1) % every == 0:
                    means = trainer.means(sums)
                    info(f"epoch {epoch + 1} step {i + 1}/{steps} " +
                         " ".join(f"{k} {v:.4g}" for k, v in means.items()))
                    self.records.write(event="step", epoch=epoch + 1, step=i + 1, **means)
            if stopping:
                return i + 1, sums
        return steps, sums

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # Every rank reaches the end, a stop or a divergence together; any other error may be
        # one rank's alone, and waiting for the others there would hang.
        try:
            self.records.close()
            leave_group(self.dist, self.stop,
                        together=exc_type is None or issubclass(exc_type, (Stopped, Diverged)))
        finally:
            self.records.folder.release(failed_early=exc_type is not None and not self.begun)
        if exc_type is KeyboardInterrupt and self.begun:  # a second Ctrl-C, mid-step
            raise Stopped("interrupted (Ctrl-C): the last checkpoint is kept (if one was "
                          "written); resume with --resume", EXIT_INTERRUPTED) from None


def open_run(settings, trainer):
    """Join the processes, pick the device and the checkpoint to resume; nothing is written
    until Run.begin(), so bad input leaves old files alone."""
    check_trainer(trainer)
    loop = settings.loop
    stop = StopSignal(stop_file=loop.stop_file, time_limit=loop.time_limit,
                      started=time.monotonic())
    folder = RunFolder(loop.out_dir, trainer.kind, trainer.products, trainer.patterns)
    try:
        dist = init_distributed(settings.runtime.device)
        stop.attach(dist)
        runtime = Runtime.from_settings(settings.runtime, dist)
        config = settings.flat()
        folder.take(main=dist.is_main)
        resume_from = resolve_resume(loop.resume, loop.overwrite, folder)
        ckpt = resume_from and load_resumable(resume_from, trainer, config, loop.epochs)
        if resume_from:
            check_resume_target(folder, resume_from, run_id_of)
    except BaseException:
        stop.restore()
        folder.release(failed_early=True)
        raise
    run_id = (ckpt or {}).get("run_id") or uuid.uuid4().hex
    records = Recorder(folder, trainer.kind, config, run_id, main=dist.is_main)
    return Run(settings, dist, runtime, stop, records, resume_from or None, ckpt or None)


def load_resumable(path, trainer, config, epochs):
    """The checkpoint at path, checked against the trainer, the settings and --epochs."""
    ckpt = load_checkpoint(path, trainer.kind, {**PROGRESS_FIELDS, **trainer.fields})
    partial = ckpt["partial"]
    if ckpt["step"] and (partial is None or partial.numel() != trainer.sums_width):
        raise UserError(f"{path} is damaged: a checkpoint written mid-epoch needs "
                        f"{trainer.sums_width} running sums, it holds "
                        f"{0 if partial is None else partial.numel()}")
    check_same_settings(ckpt["settings"], config, path)
    if epochs < ckpt["epoch"]:
        raise UserError(f"--epochs {epochs}: {path} has trained {ckpt['epoch']} epochs "
                        f"already; pass --epochs {ckpt['epoch']} or more")
    return ckpt


# ----------------------------------------------------------------------------- data, evaluation

def make_loaders(options, seed, data, runtime, dist=None):
    """The training batches (augmented, shuffled, the last partial one dropped, as the
    DataSettings `options` say) and test batches of `data`; each of N processes takes
    batch_size / N images of its own share."""
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
    """Accuracy (%) and mean cross-entropy over the batches; per_class adds each class's
    accuracy (None for a class without images). batch_statistics: BatchNorm in training mode
    (the batch-normalization lesson's counter-example), on a copy of the model."""
    was_training = model.training
    model = copy.deepcopy(model).train() if batch_statistics else model.eval()
    dev = batches.device
    loss_sum, correct, seen = (torch.zeros((), device=dev) for _ in range(3))
    classes = model.num_classes if per_class else 0
    hits_by_class, seen_by_class = (torch.zeros(classes, device=dev) for _ in range(2))
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
