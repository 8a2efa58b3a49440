"""Checkpoints and model files: written atomically, loaded with weights_only=True, checked
before use; which checkpoint to resume and whether its settings match the run's."""
import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from utils.errors import UserError
from utils.files import atomic_path, bytes_digest, write_failure


def content_digest(obj):
    """A checksum of a checkpoint's content (every tensor's dtype, shape and bytes, every plain
    value): flipped bytes inside a tensor, which torch.load does not notice, are refused."""
    h = hashlib.blake2b(digest_size=16)

    def visit(v):
        if torch.is_tensor(v):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(v.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k in sorted(v, key=repr):
                h.update(repr(k).encode())
                visit(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for x in v:
                visit(x)
        else:
            h.update(repr(v).encode())

    visit(obj)
    return h.hexdigest()


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, then rename: never a half file. The
    content's checksum goes into the file (entry 'checksum')."""
    obj = {**obj, "checksum": content_digest({k: v for k, v in obj.items() if k != "checksum"})}
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as e:  # torch's zip writer says only "file write failed": find why
        raise write_failure(path, str(e).splitlines()[0]) from None


# ----------------------------------------------------------------------------- what a file holds

@dataclass(frozen=True)
class Field:
    """One entry of a checkpoint: what it must be (said in the error) and the check."""
    what: str
    ok: Callable[[object], bool]


COUNT = Field("a whole number >= 0", lambda v: type(v) is int and v >= 0)
NUMBER = Field("a finite number", lambda v: type(v) in (int, float) and math.isfinite(v))
TEXT = Field("a string", lambda v: isinstance(v, str))
TEXT_OR_NONE = Field("a string or None", lambda v: v is None or isinstance(v, str))
DICT = Field("a dict", lambda v: isinstance(v, dict))
NAMES = Field("a list of strings", lambda v: isinstance(v, list)
              and all(isinstance(s, str) for s in v))
RECORDS = Field("a list of dicts", lambda v: isinstance(v, list)
                and all(isinstance(r, dict) for r in v))
WEIGHTS = Field("a state dict of tensors", lambda v: isinstance(v, dict)
                 and all(isinstance(k, str) and torch.is_tensor(t) for k, t in v.items()))
OPTIMIZER = Field("an optimizer state dict", lambda v: isinstance(v, dict)
                  and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list)
                  and all(isinstance(g, dict) for g in v["param_groups"]))
SUMS = Field("a 1-D tensor or None", lambda v: v is None or (torch.is_tensor(v) and v.dim() == 1))

# Where training stands, in every trainer's checkpoint: completed epochs, the step within the
# next epoch (> 0 for a checkpoint written on a stop signal) and that epoch's running sums.
PROGRESS_FIELDS = {"epoch": COUNT, "step": COUNT, "partial": SUMS, "settings": DICT,
                   "history": RECORDS, "seconds": NUMBER}
MODEL_FIELDS = {"family": TEXT, "role": TEXT, "build_args": DICT, "model": WEIGHTS,
                "settings": DICT, "metrics": DICT, "classes": NAMES, "made_by": TEXT_OR_NONE}
# model files written before the entries were renamed
MODEL_RENAMED = {"arch": "family", "arch_args": "build_args"}


def safe_load(source):
    """torch.load on the CPU with weights_only=True. torch's warning about a file of another
    pickle protocol is silenced: such a file is refused in one line by the caller."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        return torch.load(source, map_location="cpu", weights_only=True)


def load_checkpoint(path, kind=None, fields=None, data=None, renamed=None):
    """torch.load with weights_only=True, every entry of `fields` checked (data: the bytes,
    already read; renamed: {old entry name: new} of files written before a rename); a bad file
    is a UserError naming it and what is wrong."""
    if data is None and not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = safe_load(io.BytesIO(data) if data is not None else path)
    except Exception as e:  # zip errors, EOF, unpickling refusals: all unusable files
        raise UserError(f"{path} is not a readable checkpoint (corrupt, truncated or not made "
                        f"by this project: {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kind"), str):
        raise UserError(f"{path} was not written by this project's scripts (no 'kind' entry)")
    if kind is not None and ckpt["kind"] not in ((kind,) if isinstance(kind, str) else kind):
        raise UserError(f"{path} holds a '{ckpt['kind']}' checkpoint, not '{kind}'")
    saved = ckpt.pop("checksum", None)  # files from before checksums are read as they are
    as_saved = dict(ckpt)  # what the checksum covers: the entries under their saved names
    for old, new in (renamed or {}).items():
        if old in ckpt and new not in ckpt:
            ckpt[new] = ckpt.pop(old)
    for key, field in (fields or {}).items():
        if key not in ckpt:
            raise UserError(f"{path} is damaged or from another version: it has no '{key}'")
        if not field.ok(ckpt[key]):
            raise UserError(f"{path} is damaged or from another version: '{key}' should be "
                            f"{field.what}, not {type(ckpt[key]).__name__}")
    if saved is not None and saved != content_digest(as_saved):
        raise UserError(f"{path} is damaged: its content does not match the checksum it was "
                        "saved with (flipped bytes on the disk or in a copy); use another copy "
                        "or an earlier checkpoint")
    return ckpt


def load_state(module, state, path, what="model"):
    """load_state_dict with a clear error when the saved state belongs to something else."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise UserError(f"{path}: the saved {what} does not fit this architecture "
                        f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None


def resolve_resume(mode, overwrite, folder):
    """The checkpoint --resume (mode) names, or None for a fresh start, which refuses a
    folder holding an earlier run's results unless `overwrite`."""
    ckpt_path = folder.ckpt
    if mode in ("no", None) or (mode == "auto" and not os.path.exists(ckpt_path)):
        if folder.holds_results() and not overwrite:
            found = ", ".join(folder.names()[:3])
            if mode == "auto":
                raise UserError(f"--resume auto: {folder.folder} has no checkpoint "
                                f"({os.path.basename(ckpt_path)}) to resume, but holds a "
                                f"finished run ({found}); starting afresh would replace it: "
                                "pass --overwrite to do so, or another --out_dir")
            raise UserError(f"{folder.folder} holds an earlier run ({found}): pass --resume to "
                            "continue it, or --overwrite (or another --out_dir) to start again")
        return None
    if mode == "auto":
        return ckpt_path
    path = ckpt_path if mode == "yes" else mode
    if os.path.isdir(path):  # a run folder: its checkpoint
        path = os.path.join(path, os.path.basename(ckpt_path))
    if not os.path.exists(path):
        raise UserError(f"--resume: no checkpoint at {path}")
    return path


def run_id_of(path):
    """The run id a checkpoint records (None for an unreadable file or one without)."""
    try:
        ckpt = safe_load(path)
    except Exception:  # any unreadable file: not the same run
        return None
    return ckpt.get("run_id") if isinstance(ckpt, dict) else None


def data_identity(data):
    """What a run trains on, cheaply (name, classes, sizes, shape, a fingerprint of the labels
    and of a spread of images): other data is refused on resume, the same data moved is not."""
    h = hashlib.blake2b(digest_size=12)
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        h.update(y.numpy().tobytes())
        pick = torch.linspace(0, len(x) - 1, min(len(x), 256)).long()
        h.update(x[pick].contiguous().numpy().tobytes())
    return {"name": data.name, "classes": list(data.classes), "train": len(data.train_y),
            "test": len(data.test_y), "shape": list(data.train_x.shape[1:]),
            "fingerprint": h.hexdigest()}


def check_same_data(saved, current, path):
    """A resume continues on the data the checkpoint was trained on (a checkpoint from before
    identities were stored is not checked)."""
    if not isinstance(saved, dict):
        return
    diff = [k for k in current if saved.get(k) != current[k]]
    if diff:
        what = "; ".join(f"{k} {saved.get(k)} -> {current.get(k)}" for k in diff
                         if k != "fingerprint") or "the same sizes, other images"
        raise UserError(f"{path} was trained on other data ({what}): resume with the data it "
                        "was trained on (--data_dir may point at a copy, not at other images)")


# Settings that may differ between a run and its resumption: where and how fast it runs, not
# what it trains; and --epochs, to train longer (never fewer than those done).
RESUMABLE_CHANGES = {"epochs", "tensorboard", "keep_best", "device", "data_dir", "cache_dir",
                     "resume", "overwrite", "out_dir", "log_every", "amp", "compile",
                     "channels_last", "fused_adam", "download_only", "data_on_device",
                     "stop_file", "time_limit", "deterministic", "eval_every", "eval_metrics",
                     "eval_samples", "eval_classifier", "inception_weights"}

# Of those, how a run computes: a change is allowed, and said, for the numbers move with it.
NUMERICS = ("device", "amp", "compile", "channels_last", "fused_adam", "data_on_device",
            "deterministic")

# Settings added after runs were saved without them, with the value those runs had.
ADDED_SETTINGS = {"shuffle": "on", "drop_last": "on", "d_first": "off", "ema": 0.0,
                  "diffaugment": "off", "spectral_norm": "off", "real_label": 1.0,
                  "weight_decay": 0.0, "eval_bn": "eval"}


def check_same_settings(saved, current, path):
    saved = {**{k: v for k, v in ADDED_SETTINGS.items() if k in current}, **saved}
    keys = sorted((set(saved) | set(current)) - RESUMABLE_CHANGES)
    diff = [f"--{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in keys
            if saved.get(k) != current.get(k)]
    if diff:
        raise UserError(f"{path} was trained with other settings ({'; '.join(diff)}): resume "
                        "with the original flags, or start a new run in another --out_dir")


# ----------------------------------------------------------------------------- model files

def save_model(path, model, settings_dict, metrics=None, classes=None, made_by=None):
    """A model file: weights, family, role, constructor arguments, settings, final figures,
    class names and the script that trained it."""
    atomic_save({"kind": "model", "family": model.family, "role": model.role,
                 "build_args": dict(model.build_args),
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "settings": settings_dict, "metrics": metrics or {},
                 "classes": list(classes or []), "made_by": made_by}, path)


def load_model(path, role, made_by, identity=False):
    """Rebuild a network saved by save_model (`made_by`: the script that writes such files,
    for the error). identity: also the hash of the very bytes loaded, what a figure records."""
    from models import ARCHITECTURES, build

    if not os.path.isfile(path):
        raise UserError(f"model file {path} not found: {made_by} writes it")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    ckpt = load_checkpoint(path, kind="model", fields=MODEL_FIELDS, data=data,
                           renamed=MODEL_RENAMED)
    if ckpt["role"] != role:
        raise UserError(f"{path} holds a {ckpt['role']}, not a {role}")
    if ckpt["family"] not in ARCHITECTURES:
        raise UserError(f"{path} holds an unknown family of networks '{ckpt['family']}' (known: "
                        f"{', '.join(ARCHITECTURES)})")
    try:
        model = build(ckpt["family"], role, **ckpt["build_args"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot rebuild the {ckpt['family']} {role} ({e})") from None
    load_state(model, ckpt["model"], path, role)
    return (model.eval(), ckpt, bytes_digest(data)) if identity else (model.eval(), ckpt)
