"""Checkpoints and model files: written atomically, loaded with weights_only=True, checked
before use; which checkpoint to resume and whether its settings match the run's."""
import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch

from utils.cli import UserError


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


# ----------------------------------------------------------------------------- what a file holds

@dataclass(frozen=True)
class Field:
    """One entry of a checkpoint: what it must be (said in the error) and the check."""
    what: str
    ok: Callable[[object], bool]


def _is_state_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(t)
                                       for k, t in v.items())


COUNT = Field("a whole number >= 0", lambda v: type(v) is int and v >= 0)
NUMBER = Field("a finite number", lambda v: type(v) in (int, float) and math.isfinite(v))
TEXT = Field("a string", lambda v: isinstance(v, str))
TEXT_OR_NONE = Field("a string or None", lambda v: v is None or isinstance(v, str))
DICT = Field("a dict", lambda v: isinstance(v, dict))
NAMES = Field("a list of strings", lambda v: isinstance(v, list)
              and all(isinstance(s, str) for s in v))
RECORDS = Field("a list of dicts", lambda v: isinstance(v, list)
                and all(isinstance(r, dict) for r in v))
WEIGHTS = Field("a state dict of tensors", _is_state_dict)
OPTIMIZER = Field("an optimizer state dict", lambda v: isinstance(v, dict)
                  and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list)
                  and all(isinstance(g, dict) for g in v["param_groups"]))
SUMS = Field("a 1-D tensor or None", lambda v: v is None or (torch.is_tensor(v) and v.dim() == 1))

# Where training stands, in every trainer's checkpoint: completed epochs, the step within the
# next epoch (> 0 for a checkpoint written on a stop signal) and that epoch's running sums.
PROGRESS_FIELDS = {"epoch": COUNT, "step": COUNT, "partial": SUMS, "settings": DICT,
                   "history": RECORDS, "seconds": NUMBER}
MODEL_FIELDS = {"arch": TEXT, "role": TEXT, "arch_args": DICT, "model": WEIGHTS,
                "settings": DICT, "metrics": DICT, "classes": NAMES, "made_by": TEXT_OR_NONE}


def load_checkpoint(path, kind=None, fields=None):
    """torch.load with weights_only=True, then every entry of `fields` checked.

    A missing, unreadable, foreign or damaged file is a UserError naming the file and what
    is wrong, so no script meets a KeyError or a wrong type later.
    """
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip errors, EOF, unpickling refusals: all unusable files
        raise UserError(f"{path} is not a readable checkpoint (corrupt, truncated or not made "
                        f"by this project: {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kind"), str):
        raise UserError(f"{path} was not written by this project's scripts (no 'kind' entry)")
    if kind is not None and ckpt["kind"] not in ((kind,) if isinstance(kind, str) else kind):
        raise UserError(f"{path} holds a '{ckpt['kind']}' checkpoint, not '{kind}'")
    for key, field in (fields or {}).items():
        if key not in ckpt:
            raise UserError(f"{path} is damaged or from another version: it has no '{key}'")
        if not field.ok(ckpt[key]):
            raise UserError(f"{path} is damaged or from another version: '{key}' should be "
                            f"{field.what}, not {type(ckpt[key]).__name__}")
    return ckpt


def load_state(module, state, path, what="model"):
    """load_state_dict with a clear error when the saved state belongs to something else."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise UserError(f"{path}: the saved {what} does not fit this architecture "
                        f"({lines[1].strip() if len(lines) > 1 else lines[0]})") from None


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
                     "data_on_device", "stop_file", "time_limit", "deterministic",
                     "eval_every", "eval_metrics", "eval_samples", "eval_classifier",
                     "inception_weights"}


# Settings added after runs were saved without them, with the value those runs had.
ADDED_SETTINGS = {"shuffle": "on", "drop_last": "on", "d_first": "off"}


def check_same_settings(saved, current, path):
    saved = {**{k: v for k, v in ADDED_SETTINGS.items() if k in current}, **saved}
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


# ----------------------------------------------------------------------------- model files

def save_model(path, model, settings_dict, metrics=None, classes=None, made_by=None):
    """A model file: weights, the network's family, role and constructor arguments, the run's
    settings, its final figures, the class names of its dataset and the script that trained
    it."""
    atomic_save({"kind": "model", "arch": model.family, "role": model.role,
                 "arch_args": dict(model.arch),
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "settings": settings_dict, "metrics": metrics or {},
                 "classes": list(classes or []), "made_by": made_by}, path)


def load_model(path, role, made_by):
    """Rebuild a network saved by save_model: role is 'discriminator' or 'generator';
    `made_by` names the script that writes such files, for the error message."""
    from models import ARCHITECTURES, build

    if not os.path.isfile(path):
        raise UserError(f"model file {path} not found: {made_by} writes it")
    ckpt = load_checkpoint(path, kind="model", fields=MODEL_FIELDS)
    if ckpt["role"] != role:
        raise UserError(f"{path} holds a {ckpt['role']}, not a {role}")
    if ckpt["arch"] not in ARCHITECTURES:
        raise UserError(f"{path} holds an unknown family of networks '{ckpt['arch']}' (known: "
                        f"{', '.join(ARCHITECTURES)})")
    try:
        model = build(ckpt["arch"], role, **ckpt["arch_args"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot rebuild the {ckpt['arch']} {role} ({e})") from None
    load_state(model, ckpt["model"], path, role)
    return model.eval(), ckpt
