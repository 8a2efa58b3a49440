"""What the scripts share: flags, device, seeding, the Adam guard, checkpoints, logs, pictures."""
import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data import DataError

# Exit codes of the scripts, besides 0 and 130 (Ctrl-C).
EXIT_USER_ERROR = 2  # bad input: one line on stderr says what to fix
EXIT_DIVERGED = 3  # a loss became NaN or infinite; the last good checkpoint is kept
EXIT_STOPPED = 75  # stopped on a signal with a checkpoint to resume from (EX_TEMPFAIL)


class UserError(Exception):
    """A mistake a user can fix (a bad flag, a missing file); printed as one line, exit 2."""


class Stopped(Exception):
    """Training stopped on a signal after writing a checkpoint to resume from (exit 75)."""


class Diverged(Exception):
    """A loss became NaN or infinite; the last good checkpoint is kept (exit 3)."""


USER_ERRORS = (UserError, DataError)


# ----------------------------------------------------------------------------- command line

class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and accepts --a-b for every --a_b."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        known = self._option_string_actions
        for i, arg in enumerate(args):
            if arg == "--":
                break
            name, eq, value = arg.partition("=")
            snake = name.replace("-", "_")
            if name.startswith("--") and name not in known and "--" + snake[2:] in known:
                args[i] = "--" + snake[2:] + eq + value
        return super().parse_known_args(args, namespace)


def add_shared_flags(parser, *, epochs, lr, batch_size, width=196, dataset="cifar10", notes=None):
    """The flags every training script shares; each script passes the assignment's defaults
    (and, in notes, what it adds to a flag's help)."""
    g = parser.add_argument_group("shared flags (the same in every script)")
    notes = notes or {}

    def with_note(name, text):
        return f"{text}; {notes[name]}" if name in notes else text

    g.add_argument("--dataset", default=dataset, help="dataset by name: cifar10, folder, digits")
    g.add_argument("--data_dir", default="./data",
                   help="where the dataset lives (cifar10 is downloaded here when missing; "
                        "for folder: the folder holding train/ and test/)")
    g.add_argument("--cache_dir", default=None,
                   help="where decoded image folders are cached (default ~/.cache/cnn_gan)")
    g.add_argument("--out_dir", default=".", help="where models, checkpoints, logs and pictures go")
    g.add_argument("--epochs", type=int, default=epochs,
                   help=with_note("epochs", "training epochs"))
    g.add_argument("--batch_size", type=int, default=batch_size,
                   help="images per step: the global batch, split among torchrun's processes")
    g.add_argument("--lr", type=float, default=lr,
                   help="Adam learning rate, for the global batch: unchanged by the number of "
                        "processes (scale it yourself if you raise --batch_size)")
    g.add_argument("--width", type=int, default=width,
                   help=with_note("width", "channels of every hidden layer of the networks"))
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw of the run")
    g.add_argument("--resume", nargs="?", const="yes", default="no",
                   help="continue from the checkpoint in --out_dir (or the path given); "
                        "'auto' resumes when a checkpoint exists and starts fresh otherwise")
    g.add_argument("--overwrite", action="store_true",
                   help="start fresh even though --out_dir holds a checkpoint of an earlier run")
    g.add_argument("--subset", type=int, default=None,
                   help="train on N training images (a seeded choice) for quick runs")
    g.add_argument("--adam_step_cap", type=int, default=1024,
                   help="the assignment's Adam overflow guard: a step count that reaches this is "
                        "set back to cap-24 (0 turns it off)")
    g.add_argument("--log_every", type=int, default=50, help="print and log one line every N steps")
    g.add_argument("--stop_file", default=None,
                   help="stop as on SIGTERM (checkpoint, exit code 75) once this file exists; "
                        "the job scripts create it when the scheduler warns of the walltime")
    g.add_argument("--time_limit", type=float, default=None,
                   help="stop as on SIGTERM after this many seconds (e.g. the walltime less a "
                        "margin)")
    return g


def check_positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UserError(f"--{name} must be positive, got {value}")


def check_shared_flags(args):
    from data import DATASETS

    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{args.dataset}'; choose one of {', '.join(DATASETS)}")
    check_positive(args, "epochs", "batch_size", "lr", "width", "subset", "log_every",
                   "time_limit")
    if args.adam_step_cap < 0:
        raise UserError("--adam_step_cap must be 0 (off) or a positive step count")
    if not math.isfinite(args.lr):
        raise UserError(f"--lr must be a finite number, got {args.lr}")


def run_main(main, argv=None):
    """Run a script's main; a user's mistake becomes one line on stderr and exit code 2."""
    try:
        return main(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Stopped as e:
        print(str(e), file=sys.stderr)
        sys.exit(EXIT_STOPPED)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- processes

@dataclass
class Dist:
    """Where this process stands among those torchrun started (one process: rank 0 of 1)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def all_max(self, tensor):
        """The largest value over every process (in place); a no-op for one process."""
        if self.enabled:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor

    def all_sum(self, tensor):
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def wrap(self, module, device):
        """DistributedDataParallel around a module when there are several processes."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def per_rank_batch(self, batch_size):
        if batch_size % self.world_size:
            raise UserError(f"--batch_size {batch_size} is the global batch and must divide "
                            f"among the {self.world_size} processes")
        return batch_size // self.world_size


def init_distributed(device_arg):
    """Join the process group torchrun set up (its RANK/WORLD_SIZE/LOCAL_RANK variables):
    NCCL on GPUs, gloo on the CPU. Without torchrun: a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_arg != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local)


class StopSignal:
    """Asks a trainer to stop cleanly: SIGTERM or SIGUSR1 (what SLURM sends before the
    walltime with --signal), a stop file appearing (what the job scripts create when the
    scheduler warns them; it reaches every node of a multi-node job), or a time limit.

    The trainers ask after every step. Signals are answered at once; the file and the clock
    are looked at every `every` steps, and with several processes the ranks agree then (one
    all-reduce), so all of them stop after the same step.
    """

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self, dist=None, stop_file=None, time_limit=None, every=10):
        self.dist, self.every, self.received = dist or Dist(), every, None
        self.stop_file, self.deadline = stop_file, None
        if time_limit:
            self.deadline = time.time() + time_limit
        self._previous = {}
        for name in self.SIGNALS:
            if hasattr(signal, name):
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is None:
            info(f"received {signal.Signals(signum).name}: stopping after this step")
        self.received = signum

    def _asked(self):
        if self.received is not None:
            return True
        if self.stop_file and os.path.exists(self.stop_file):
            info(f"found {self.stop_file}: stopping after this step")
            return True
        if self.deadline and time.time() > self.deadline:
            info("--time_limit reached: stopping after this step")
            return True
        return False

    def __call__(self, step, device=None):
        if not self.dist.enabled and self.received is not None:
            return True
        if (step + 1) % self.every:
            return False
        asked = self._asked()
        if not self.dist.enabled:
            return asked
        flag = torch.tensor(float(asked), device=device)
        return bool(self.dist.all_max(flag).item())

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- device, seeds

def resolve_device(name):
    """'auto' -> cuda when available, else cpu; a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


SPEED_FLAGS = {
    "amp": "bf16 autocast of the networks (losses and LayerNorm stay fp32)",
    "compile": "torch.compile the networks' forward and backward passes (the gradient "
               "penalty's double backward runs eagerly)",
    "channels_last": "channels_last memory format for the networks and their inputs",
    "fused_adam": "fused Adam kernels (the step-overflow guard still applies)",
    "data_on_device": "hold the whole dataset on the GPU as uint8 and augment it there",
}


def add_speed_flags(parser, names=tuple(SPEED_FLAGS)):
    g = parser.add_argument_group("speed (auto: on for CUDA, off for the CPU; each can be turned "
                                  "off alone)")
    for name in names:
        g.add_argument(f"--{name}", choices=("auto", "on", "off"), default="auto",
                       help=SPEED_FLAGS[name])


@dataclass
class Runtime:
    """Device, precision, memory format and compilation: decided here, once, for every script.

    The CPU path is plain fp32 and eager unless a flag turns something on; on CUDA every
    speed-up is on unless a flag turns it off.
    """
    device: torch.device
    amp: bool = False
    compile: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    data_on_device: bool = False
    compile_backend: str = "inductor"

    @classmethod
    def from_args(cls, args, dist=None):
        device = resolve_device(args.device)
        if dist is not None and dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)  # one GPU per process
        on_gpu = device.type == "cuda"
        pick = {k: (on_gpu if getattr(args, k, "auto") == "auto" else getattr(args, k) == "on")
                for k in SPEED_FLAGS}
        if on_gpu:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
        return cls(device, **pick)

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def module(self, model):
        """The model on the device in the chosen memory format (parameters stay fp32)."""
        return model.to(self.device, memory_format=self.memory_format)

    def compiled(self, model):
        """A compiled wrapper sharing the model's parameters (save the model, not this)."""
        return torch.compile(model, backend=self.compile_backend) if self.compile else model

    def adam(self, params, lr, betas=(0.9, 0.999)):
        kind = dict(fused=True) if self.fused_adam else {}
        return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas), **kind)

    def describe(self):
        return dict(device=str(self.device), **{k: getattr(self, k) for k in SPEED_FLAGS})


def seed_everything(seed):
    """Seed the global generators (model initialisation); the data has generators of its own."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ----------------------------------------------------------------------------- Adam guard

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


# ----------------------------------------------------------------------------- checkpoints

def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, then rename: never a half file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, kind=None):
    """torch.load with weights_only=True; a missing, corrupt or foreign file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip errors, EOF, unpickling refusals: all unusable files
        raise UserError(f"{path} is not a readable checkpoint (corrupt, truncated or not made "
                        f"by this project: {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise UserError(f"{path} was not written by this project's scripts")
    if kind is not None and ckpt["kind"] not in ((kind,) if isinstance(kind, str) else kind):
        raise UserError(f"{path} holds a '{ckpt['kind']}' checkpoint, not '{kind}'")
    return ckpt


def load_state(module, state, path, what="model"):
    """load_state_dict with a clear error when the shapes belong to another architecture."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()
        raise UserError(f"{path}: the saved {what} does not fit this architecture "
                        f"({first[1].strip() if len(first) > 1 else first[0]})") from None


def resolve_resume(args, ckpt_path):
    """The checkpoint to resume from, or None for a fresh start; refuses to overwrite a run."""
    mode = args.resume
    if mode in ("no", None):
        if os.path.exists(ckpt_path) and not args.overwrite:
            raise UserError(f"{ckpt_path} holds an earlier run: pass --resume to continue it, or "
                            "--overwrite (or another --out_dir) to start again")
        return None
    if mode == "auto":
        return ckpt_path if os.path.exists(ckpt_path) else None
    path = ckpt_path if mode == "yes" else mode
    if not os.path.exists(path):
        raise UserError(f"--resume: no checkpoint at {path}")
    return path


# Settings that may differ between a run and its resumption: where and how fast it runs, not
# what it trains.
RESUMABLE_CHANGES = {"device", "data_dir", "cache_dir", "resume", "overwrite", "out_dir",
                     "log_every", "amp", "compile", "channels_last", "fused_adam",
                     "data_on_device", "stop_file", "time_limit"}


def check_same_settings(saved, current, path):
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    diff = [f"--{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in keys
            if saved.get(k) != current.get(k)]
    if diff:
        raise UserError(f"{path} was trained with other settings ({'; '.join(diff)}): resume "
                        "with the original flags, or start a new run in another --out_dir")


def settings(args):
    """The resolved flags as a plain dict (what is printed, saved and stored in checkpoints)."""
    return {k: v for k, v in sorted(vars(args).items()) if not callable(v)}


def write_settings(args, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(settings(args), f, indent=2)
        f.write("\n")


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


def progress(iterable, total, desc):
    """A tqdm bar on a terminal; nothing in a batch log (the compact lines say enough there)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)


def info(message):
    """Human-readable progress goes to stderr; stdout carries only the final JSON line."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- pictures

def to_unit(images):
    """Images in [-1, 1] (B, C, H, W) -> float [0, 1] on the CPU."""
    return images.detach().float().cpu().add(1).div(2).clamp(0, 1)


def save_grid(images, path, nrow=10, scale=2):
    """Save images (B, C, H, W) in [0, 1] as one PNG grid, nrow per row, row-major.

    Two-pixel white gaps as in the assignment's plot; each pixel drawn scale x scale.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2,
                     pad_value=1.0)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)


def plot_curves(records, panels, path, title, xkey="epoch", ncols=3):
    """Curves from log records: panels is a list of (panel title, [keys]), one line per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [k for k in keys if any(k in r for r in records)]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r[xkey], r[key]) for r in records if key in r and xkey in r]
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xkey, fontsize=8)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)



# ----------------------------------------------------------------------------- evaluation

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


# ----------------------------------------------------------------------------- model files

def save_model(path, model, name, settings_dict, metrics=None, classes=None, made_by=None):
    """A model file: weights, the architecture's name and arguments, the run's settings,
    its final figures, the class names of its dataset and the script that trained it."""
    atomic_save({"kind": "model", "arch": name, "arch_args": dict(model.arch),
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "settings": settings_dict, "metrics": metrics or {},
                 "classes": list(classes or []), "made_by": made_by}, path)


def load_model(path, arch, made_by):
    """Rebuild a model saved by save_model; `made_by` names the script for the error message."""
    from models import ARCHITECTURES

    if not os.path.isfile(path):
        raise UserError(f"model file {path} not found: {made_by} writes it")
    ckpt = load_checkpoint(path, kind="model")
    if ckpt.get("arch") != arch:
        raise UserError(f"{path} holds a {ckpt.get('arch')}, not a {arch}")
    try:
        model = ARCHITECTURES[arch](**ckpt["arch_args"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot rebuild the {arch} ({e})") from None
    load_state(model, ckpt["model"], path, arch)
    return model.eval(), ckpt
