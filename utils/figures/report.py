"""The report: what the assignment asks to hand in, gathered from the run's figures, model
files, logs and summary.json into one PDF."""
import os

from utils.checkpoints import load_model
from utils.cli import UserError, info
from utils.files import atomic_path, read_json
from utils.figures.context import MODELS
from utils.rundir import read_records


def find_figure(folder, stem):
    """stem.png if it exists, else the newest stem*.png (a variant with other settings)."""
    import glob

    exact = os.path.join(folder, stem + ".png")
    if os.path.exists(exact):
        return exact
    matches = sorted(glob.glob(os.path.join(folder, stem + "*.png")), key=os.path.getmtime)
    return matches[-1] if matches else None


def model_metrics(path):
    """The final figures stored in a model file, or None when it cannot be read."""
    try:
        return load_model(path, "discriminator", "")[1].get("metrics", {})
    except UserError:
        return None


QUALITY_NAMES = {"fid": "FID", "kid": "KID", "is": "Inception Score", "cfid": "classifier FID",
                 "cacc": "classifier accuracy on the intended class (%)",
                 "intra_fid_mean": "intra-FID, mean over the classes",
                 "intra_cfid_mean": "intra classifier FID, mean over the classes"}


def quality_notes(metrics, log_path):
    """The report's lines on sample quality: metrics.py's last figures, and every evaluation
    made during training (--eval_every), read from the GAN's log."""
    notes = []
    if metrics:
        notes.append(f"metrics.py: {metrics['n_fake']} samples against {metrics['real']} "
                     f"({metrics['split']}, {metrics['n_real']} images)")
        for key, name in QUALITY_NAMES.items():
            if key in metrics:
                spread = metrics.get(f"{key}_std")
                notes.append(f"  {name}: {metrics[key]:.4g}" +
                             (f" +- {spread:.2g}" if spread is not None else ""))
    evals = {r["epoch"]: r for r in read_records(log_path)  # the last record of each epoch
             if r.get("event") == "epoch" and "eval_samples" in r}
    evals = [evals[k] for k in sorted(evals)]
    if evals:
        notes.append(f"during training (--eval_every), {evals[-1]['eval_samples']} samples "
                     "each (fewer than 50,000 samples read FID higher):")
        for r in evals[-12:]:
            notes.append(f"  epoch {r['epoch']}: " + ", ".join(
                f"{k} {r[k]:.4g}" for k in QUALITY_NAMES if k in r))
    return notes


def build_report(run_dir, vis_dir, path, paths=None):
    """Gather the assignment's hand-in into one PDF; returns the titles of its pages.

    What is missing is named on its page and on stderr, and the rest is still drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    paths = paths or {k: os.path.join(run_dir, f) for k, (f, _) in MODELS.items()}
    summary = read_json(os.path.join(vis_dir, "summary.json"), {})
    titles, missing = [], []

    def page(title, items, ncols, notes=()):
        """items: (caption, png path or None, what makes it) laid out on one page."""
        present = [(c, p) for c, p, _ in items if p]
        for c, p, how in items:
            if not p:
                missing.append(f"{c} (made by {how})")
        fig = plt.figure(figsize=(11.69, 8.27))
        fig.suptitle(title, fontsize=14)
        text = list(notes) + [f"missing: {c} (made by {how})" for c, p, how in items if not p]
        if text:
            fig.text(0.04, 0.9, "\n".join(text), va="top", fontsize=9, family="monospace")
        if present:
            nrows = -(-len(present) // ncols)
            top = 0.86 - 0.025 * len(text) if text else 0.9
            grid = fig.add_gridspec(nrows, ncols, top=top, bottom=0.04, left=0.03, right=0.97,
                                    hspace=0.25, wspace=0.08)
            for i, (caption, png) in enumerate(present):
                ax = fig.add_subplot(grid[i // ncols, i % ncols])
                ax.imshow(plt.imread(png))
                ax.set_title(caption, fontsize=9)
                ax.axis("off")
        pdf.savefig(fig)
        plt.close(fig)
        titles.append(title)

    with atomic_path(path, suffix=".pdf") as tmp, PdfPages(tmp) as pdf:
        notes = []
        for name, (fname, script) in MODELS.items():
            m = model_metrics(paths[name]) if os.path.exists(paths[name]) else None
            label = "without" if name == "baseline" else "with"
            if m is None:
                missing.append(f"{fname} (made by {script})")
                notes.append(f"discriminator trained {label} the generator: {fname} missing "
                             f"(made by {script})")
            else:
                notes.append(f"discriminator trained {label} the generator ({fname}): test "
                             f"accuracy {m.get('test_acc')}% after {m.get('epochs')} epochs")
        page("Understanding CNNs and GANs: results", [], 1, notes)

        out = os.path.join(run_dir, "output")
        grids = sorted(f for f in os.listdir(out) if f.endswith(".png")) \
            if os.path.isdir(out) else []
        picks = sorted({grids[round(i * (len(grids) - 1) / 5)] for i in range(6)}) if grids else []
        page("Generator samples as training progressed (column c = class c)",
             [(f"after epoch {int(f[:-4]) + 1}", os.path.join(run_dir, "output", f), "")
              for f in picks] or [("sample grids in output/", None, "train_gan.py")], 3)

        for name in MODELS:
            s = summary.get(f"perturb_{name}", {})
            notes = [f"accuracy on the true labels {s['acc_before']:.1f}% before, "
                     f"{s['acc_after']:.1f}% after (gain {s['gain']:g}); label+1 predicted for "
                     f"{s['alt_after']:.1f}%"] if s else []
            how = "visualize.py perturb"
            page(f"Perturbed real images, {name} discriminator",
                 [("real images", find_figure(vis_dir, "real_images"), how),
                  ("gradients toward label+1", find_figure(vis_dir, f"gradient_image_{name}"), how),
                  ("altered images", find_figure(vis_dir, f"altered_images_{name}"), how),
                  ("accuracy against gain", find_figure(vis_dir, f"perturb_gain_{name}"), how)],
                 2, notes)

        how = "visualize.py max-class"
        page("Synthetic images maximising each class output (column c = class c)",
             [(f"{name} discriminator", find_figure(vis_dir, f"max_class_{name}"), how)
              for name in MODELS], 1)

        layers = sorted({int(f.split("layer")[1].split("_")[0].split(".")[0])
                         for f in os.listdir(vis_dir) if f.startswith("max_features_")}) \
            if os.path.isdir(vis_dir) else []
        for layer in layers or [None]:
            how = "visualize.py max-features"
            page(f"Synthetic images maximising layer {layer or '?'} features",
                 [(f"{name} discriminator, layer {layer}",
                   find_figure(vis_dir, f"max_features_{name}_layer{layer}") if layer else None,
                   how) for name in MODELS], 2)

        # the curves lie beside the model files the trainers wrote
        page("Training curves",
             [("baseline classifier", find_figure(os.path.dirname(paths["baseline"]) or ".",
                                                  "baseline_curves"), "train_baseline.py"),
              ("ACGAN + WGAN-GP", find_figure(os.path.dirname(paths["gan"]) or ".",
                                              "gan_curves"), "train_gan.py")], 1)

        s = summary.get("samples", {})
        notes = [f"the baseline classifies {s['baseline_agreement']:.1f}% of the samples as the "
                 "class they were generated for"] if "baseline_agreement" in s else []
        how = "visualize.py samples"
        page("Samples from the generator", [
            ("samples, one column per class", find_figure(vis_dir, "samples"), how),
            ("interpolations within a class", find_figure(vis_dir, "interpolation"), how)],
             2, notes)

        notes = quality_notes(summary.get("metrics"), os.path.join(run_dir, "gan_log.jsonl"))
        if not notes:
            missing.append("sample-quality figures (made by metrics.py, or train_gan.py "
                           "--eval_every)")
        page("Sample quality", [], 1, notes or ["missing: sample-quality figures (made by "
                                                "metrics.py, or train_gan.py --eval_every)"])

    for m in missing:
        info(f"report: missing {m}")
    info(f"report: {len(titles)} pages in {path}")
    return titles
