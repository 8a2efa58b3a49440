"""Console output of every command: progress bars and lines on stderr, the final JSON line on
stdout."""
import json
import os
import sys


def progress(iterable, total, desc):
    """A tqdm bar on a terminal; nothing in a batch log (the compact lines say enough there)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None, dynamic_ncols=True)


def tidy(value):
    """Numbers as a reader wants them in summary.json: 6 significant digits (a float32's
    28.00000011920929 is 28.0)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v) for v in value]
    return value


def print_result(script, metrics, **fields):
    """The final JSON line on stdout: the script's name, fields, its figures; on rank 0 only
    under torchrun, so a job's output holds it once."""
    rank = os.environ.get("RANK", "0").strip()  # checked at the start (torchrun_env)
    if not rank.isdigit() or int(rank) == 0:
        print(json.dumps(tidy(dict(script=script, **fields, **metrics))), flush=True)


def info(message):
    """Human-readable progress goes to stderr, on a line of its own above a progress bar that
    is showing; stdout carries only the final JSON line."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
        tqdm.tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()
        return
    print(message, file=sys.stderr, flush=True)
