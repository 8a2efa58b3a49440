"""The report: what the assignment asks to hand in, gathered from the run's model files,
logs, grids and figures into one PDF. A figure is shown only when the model files its record
names (by content hash) are those in the run now; docs/visualize.md says what the pages hold.
"""
import os
import shlex

from utils import runfiles
from utils.checkpoints import load_model
from utils.console import info
from utils.errors import UserError
from utils.files import atomic_path, file_digest, read_json
from utils.figures.context import MODELS
from utils.pictures import CURVE_PANELS, curves_figure, gan_title, pyplot
from utils.rundir import epoch_records
from utils.quality import WEAK_JUDGE
from utils.sampling import conditioning

A4 = (11.69, 8.27)
QUALITY_NAMES = {"fid": "FID", "kid": "KID", "is": "Inception Score", "cfid": "classifier FID",
                 "judge_test_acc": "the judging classifier's own test accuracy (%)",
                 "cacc": "classifier accuracy on the intended class (%)",
                 "cconf": "samples the classifier recognises with confidence (%)",
                 "cconf_classes": "classes among them",
                 "intra_fid_mean": "intra-FID, mean over the classes",
                 "intra_cfid_mean": "intra classifier FID, mean over the classes"}


def model_file(path, role):
    """(the checkpoint of a model file, or None when there is none or it cannot be read)."""
    if not os.path.isfile(path):
        return None
    try:
        return load_model(path, role, "")[1]
    except UserError:
        return None


def recorded_path(entry, run_dir):
    """Where a record's model file is now: its 'file' relative to this run folder (or absolute);
    an older record's absolute 'path' is looked for here by its name first (a run moved)."""
    if not isinstance(entry, dict):
        return None
    name = entry.get("file")
    if isinstance(name, str):
        return name if os.path.isabs(name) else os.path.join(run_dir, name)
    path = entry.get("path")
    if not isinstance(path, str):
        return None
    here = os.path.join(run_dir, os.path.basename(path))
    return here if os.path.isfile(here) else path


def fresh(record, digests, run_dir="."):
    """Whether every model file a figure's record names is still there with the same hash."""
    made = record.get("made_from") if isinstance(record, dict) else None
    if not made or not isinstance(made, dict):
        return False  # made before figures recorded their models: cannot be vouched for
    for entry in made.values():
        path = recorded_path(entry, run_dir)
        if path not in digests:
            digests[path] = file_digest(path) if path and os.path.isfile(path) else None
        if digests[path] is None or digests[path] != entry.get("digest"):
            return False
    return True


def pick(summary, exact, prefix=None):
    """The record of a figure: the one with the assignment's settings (key exact), else the
    latest variant with other settings (keys starting with prefix, by default exact)."""
    if exact in summary:
        return summary[exact]
    variants = [v for k, v in summary.items()
                if k.startswith(prefix or exact) and isinstance(v, dict)]
    return max(variants, key=lambda v: v.get("time", 0), default=None)


def quality_notes(metrics, log_path):
    """The report's lines on sample quality: metrics.py's figures, and every evaluation made
    during training (--eval_every), read from the GAN's log."""
    notes = []
    if metrics:
        notes.append(f"metrics.py: {metrics['n_fake']} samples against {metrics['real']} "
                     f"({metrics['split']}, {metrics['n_real']} images)")
        for key, name in QUALITY_NAMES.items():
            if isinstance(metrics.get(key), (int, float)):
                spread = metrics.get(f"{key}_std")
                notes.append(f"  {name}: {metrics[key]:.4g}" +
                             (f" +- {spread:.2g}" if isinstance(spread, (int, float)) else ""))
        judge = metrics.get("judge_test_acc")
        if isinstance(judge, (int, float)) and judge < WEAK_JUDGE:
            notes.append(f"  warning: a judge at {judge:.1f}% test accuracy is too weak to rank "
                         "anything: its figures say little")
    evals = [r for r in epoch_records(log_path) if isinstance(r.get("eval_samples"), int)]
    if evals:
        notes.append(f"during training (--eval_every), {evals[-1]['eval_samples']} samples "
                     "each (fewer than 50,000 samples read FID higher):")
        for r in evals[-12:]:
            notes.append(f"  epoch {r['epoch']}: " + ", ".join(
                f"{k} {r[k]:.4g}" for k in QUALITY_NAMES if k in r))
    return notes


def accuracy_details(metrics):
    """The lines page 1 adds under a classifier's test accuracy: each class's and, where it was
    measured, the accuracy with BatchNorm in training mode (the batch-normalization lesson)."""
    lines = []
    by_class = metrics.get("test_acc_per_class")
    if isinstance(by_class, dict) and by_class:
        lines.append("  by class: " + ", ".join(
            f"{c} {a:.1f}%" if isinstance(a, (int, float)) else f"{c} -"
            for c, a in by_class.items()))
    train_mode = metrics.get("test_acc_train_mode")
    if isinstance(train_mode, (int, float)):
        lines.append(f"  tested in training mode (BatchNorm on each test batch's own "
                     f"statistics): {train_mode}%")
    return lines


def attack_lines(attack):
    lines = []
    for name, f in attack["models"].items():
        curve = f["pgd_curve"]
        lines.append(f"{name}: under PGD ({f['steps']} steps) {curve[0]:.0f}% at 0, "
                     + ", ".join(f"{curve[k]:.0f}% at {k}" for k in (2, 4, 8, 16)
                                 if k < len(curve)) + " levels")
    return lines


def transfer_lines(transfer):
    return [f"{name}'s max-class images by {method}: judged their class by " + ", ".join(
                f"{os.path.basename(j)} {r:.0f}%" for j, r in rates.items())
            for name, methods in transfer["rates"].items() for method, rates in methods.items()]


def whole_png(path):
    """Whether path is a PNG that decodes whole (not one cut short by a crash or a full disk)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return image.format == "PNG"
    except (OSError, ValueError, SyntaxError):
        return False


def scale(settings, metrics, trainer):
    """How large a run was: its data, width, training images and epochs, beside the epochs its
    lesson trains."""
    from recipes import CLASSIFIER_RECIPES, RECIPES

    table = RECIPES if trainer == "gan" else CLASSIFIER_RECIPES
    recipe = table.get(settings.get("recipe"), table["ie534"])
    lesson = recipe.defaults.get("epochs")
    epochs = metrics.get("epochs", settings.get("epochs"))
    images = (f"{settings['subset']} training images (--subset)" if settings.get("subset") else
              f"{settings['labels_per_class']} labelled images of each class"
              if settings.get("labels_per_class") else "every training image")
    line = (f"{settings.get('dataset', 'cifar10')}, {settings.get('arch')} width "
            f"{settings.get('width')}, {images}, {epochs} epochs")
    if isinstance(lesson, int) and isinstance(epochs, int) and epochs < lesson:
        line += f" of the lesson's {lesson}: a short run, not the lesson's"
    return line


class Report:
    """The pages of one run's report, written to a PDF."""

    def __init__(self, run_dir, vis_dir, paths):
        self.run_dir, self.vis_dir, self.paths = run_dir, vis_dir, paths
        self.summary = read_json(
            os.path.join(vis_dir, runfiles.SUMMARY), {}, kind=dict,
            remedy=f"delete it and remake the figures: {self.remake('all')}")
        self.digests = {}
        self.titles, self.missing, self.stale, self.broken = [], [], [], []
        self.disc = {n: c for n in MODELS
                     if (c := model_file(paths[n], "discriminator")) is not None}
        self.gen = model_file(paths["generator"], "generator")
        self.conditional = bool(self.gen and conditioning(self.gen)[0])

    def remake(self, figure):
        return f"python visualize.py {figure} --run_dir {shlex.quote(self.run_dir)}"

    def figure(self, record, caption, figure):
        """(caption, png paths or None, a note): a recorded, fresh figure whose pictures are
        whole, or why not (missing, out of date, damaged), with the command that remakes it."""
        if record is None:
            self.missing.append(f"{caption} (made by {self.remake(figure)})")
            return caption, None, f"missing: {self.missing[-1]}"
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) and f and
                                                  os.path.basename(f) == f for f in files):
            return self.damaged(caption, figure, f"its record in {runfiles.SUMMARY}")
        if not fresh(record, self.digests, self.run_dir):
            self.stale.append(caption)
            return caption, None, (f"out of date: {caption} was made from an earlier model "
                                   f"file; remake it with {self.remake(figure)}")
        paths = [os.path.join(self.vis_dir, f) for f in files]
        for path in paths:
            if not whole_png(path):
                return self.damaged(caption, figure, path)
        return caption, paths, None

    def damaged(self, caption, figure, what):
        self.broken.append(f"{caption}: {what} (remake it with {self.remake(figure)})")
        return caption, None, (f"damaged: {caption}: {what} is missing or damaged; remake it "
                               f"with {self.remake(figure)}")

    def page(self, title, items=(), ncols=2, notes=()):
        """items: (caption, [png paths] or a png path or None, a note) on one page."""
        shown, text = [], list(notes)
        for caption, pngs, note in items:
            if note:
                text.append(note)
            files = [pngs] if isinstance(pngs, str) else (pngs or [])
            shown += [(caption if len(files) == 1 else describe(png), png) for png in files]
        fig = pyplot().figure(figsize=A4)
        fig.suptitle(title, fontsize=14)
        if text:
            fig.text(0.04, 0.9, "\n".join(text), va="top", fontsize=9, family="monospace")
        if shown:
            nrows = -(-len(shown) // ncols)
            top = 0.86 - 0.025 * len(text) if text else 0.9
            grid = fig.add_gridspec(nrows, ncols, top=top, bottom=0.04, left=0.03, right=0.97,
                                    hspace=0.25, wspace=0.08)
            for i, (caption, png) in enumerate(shown):
                ax = fig.add_subplot(grid[i // ncols, i % ncols])
                ax.imshow(native_pixels(png), interpolation="none")  # embedded as they are
                ax.set_title(caption, fontsize=9)
                ax.axis("off")
        self.add(fig, title)

    def add(self, fig, title):
        self.pdf.savefig(fig)
        pyplot().close(fig)
        self.titles.append(title)

    def curves(self, kind, title):
        """One page of a trainer's curves, drawn from its log (beside its model) as vectors."""
        log = os.path.join(os.path.dirname(self.paths[kind]) or ".", runfiles.log(kind))
        fig = curves_figure(epoch_records(log), CURVE_PANELS[kind], title, figsize=A4)
        if fig is not None:
            self.add(fig, title)

    # ------------------------------------------------------------------------- the pages

    def write(self, path):
        from matplotlib.backends.backend_pdf import PdfPages

        # written uncompressed, then compressed by shrink_images: pypdf reads matplotlib's
        # compressed images (PNG predictors) in pure Python, 2 s of a 5-s report
        with atomic_path(path, suffix=".pdf") as tmp:
            with pyplot().rc_context({"pdf.compression": 0}), PdfPages(tmp) as self.pdf:
                self.pages()
            shrink_images(tmp)
        for what, items in (("missing", self.missing), ("out of date, left out:", self.stale),
                            ("damaged, left out:", self.broken)):
            for item in items:
                info(f"report: {what} {item}")
        info(f"report: {len(self.titles)} pages in {path}")
        return self.titles

    def pages(self):
        """Every page, in the hand-in's order."""
        self.title_page()
        self.progress_page()
        heads = [n for n, c in self.disc.items() if c["build_args"].get("num_classes")]
        for name in heads:
            self.perturb_page(name)
        if heads:
            self.page("Synthetic images maximising each class output",
                      [self.figure(pick(self.summary, f"max_class_{name}"),
                                   f"{name} discriminator", "max-class") for name in heads], 1)
        self.feature_pages()
        self.curve_pages()
        if self.gen is not None:
            self.samples_page()
            self.quality_page()
        self.extra_pages(heads)

    def extra_pages(self, heads):
        """Beyond the assignment, only when those figures were made (visualize.py all
        --extras): the attributions, and what the generator changed in its discriminator."""
        items = [self.figure(self.summary[f"attributions_{name}"],
                             f"{name} discriminator: image, saliency, integrated gradients, "
                             "Grad-CAM", "attribute")
                 for name in heads if f"attributions_{name}" in self.summary]
        if items:
            self.page("Beyond the assignment: attributions (captum)", items, 2)
        attack, transfer = self.summary.get("attack"), self.summary.get("transfer")
        if not (attack or transfer):
            return
        notes = [f"{name} discriminator: test accuracy {ckpt.get('metrics', {}).get('test_acc')}%"
                 for name, ckpt in self.disc.items()]
        items = []
        for record, caption, lines, figure in (
                (attack, "accuracy under PGD; logits along the adversarial direction",
                 attack_lines, "attack"),
                (transfer, "max-class images: the assignment's ascent (top), lucid's (bottom)",
                 transfer_lines, "transfer")):
            if record:
                items.append(self.figure(record, caption, figure))
                if items[-1][1] is not None:
                    notes += self.numbers(lines, record, figure)
        self.page("Beyond the assignment: what the generator changed in its discriminator",
                  items, 2, notes)

    def numbers(self, lines, record, figure):
        """A figure's numbers as lines of text; a record whose numbers are damaged is said so,
        with the command that remakes it."""
        try:
            return lines(record)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            return [self.damaged(figure, figure, f"its numbers in {runfiles.SUMMARY}")[2]]

    def title_page(self):
        notes = []
        for name, ckpt in self.disc.items():
            m = ckpt.get("metrics", {})
            label = "without" if name == "baseline" else "with"
            acc = m.get("test_acc")
            result = (f"test accuracy {acc}% after {m.get('epochs')} epochs"
                      if isinstance(acc, (int, float)) else
                      "no class head (an unconditional GAN): no test accuracy")
            notes.append(f"discriminator trained {label} the generator ({MODELS[name][0]}): "
                         f"{result}")
            notes.append("  " + scale(ckpt["settings"], m, name))
            notes.extend(accuracy_details(m))
        if self.gen is not None:
            ema = os.path.basename(self.paths["generator"]) == runfiles.GENERATOR_EMA_MODEL
            notes.append(f"generator: {gan_title(self.gen['settings'])}, "
                         f"{'class-conditional' if self.conditional else 'unconditional'}"
                         + (", samples from its moving average (--ema)" if ema else ""))
        best = model_file(os.path.join(self.run_dir, runfiles.GENERATOR_BEST_MODEL), "generator")
        if best is not None:
            m = {k: v for k, v in best["metrics"].items() if k != "epoch"}
            notes.append(f"best generator ({', '.join(f'{k} {v:.4g}' for k, v in m.items())}): "
                         f"epoch {best['metrics'].get('epoch')}, in generator_best.model")
        self.page("Understanding CNNs and GANs: results", notes=notes)

    def progress_page(self):
        out = os.path.join(self.run_dir, runfiles.GRIDS)
        grids = sorted((f for f in os.listdir(out) if f[:-4].isdigit() and f.endswith(".png")),
                       key=lambda f: int(f[:-4])) \
            if self.gen is not None and os.path.isdir(out) else []  # 999 before 1000
        damaged = [f for f in grids if not whole_png(os.path.join(out, f))]
        for f in damaged:  # a grid cut short by a crash: said, and the others shown
            self.broken.append(f"{os.path.join(out, f)} (train_gan.py writes it again when it "
                               "trains that epoch again)")
        grids = [f for f in grids if f not in damaged]
        if not grids:
            return
        picks = sorted({grids[round(i * (len(grids) - 1) / 5)] for i in range(6)})
        self.page("Generator samples as training progressed" +
                  (" (column c = class c)" if self.conditional else ""),
                  [(f"after epoch {int(f[:-4]) + 1}", os.path.join(out, f), None)
                   for f in picks], 3)

    def perturb_page(self, name):
        record = pick(self.summary, f"perturb_{name}")
        item = self.figure(record, "real, gradient and altered images, accuracy against gain",
                           "perturb")
        notes = []
        if item[1] is not None:
            notes = [f"accuracy on the true labels {record['acc_before']:.1f}% before, "
                     f"{record['acc_after']:.1f}% after (gain {record['gain']:g}); label+1 "
                     f"predicted for {record['alt_after']:.1f}%"]
        self.page(f"Perturbed real images, {name} discriminator", [item], 2, notes)

    def feature_pages(self):
        layers = sorted({v.get("layer") for k, v in self.summary.items()
                         if k.startswith("max_features_") and isinstance(v, dict)
                         and v.get("layer") is not None})
        if not layers and self.disc:
            self.page("Synthetic images maximising the features of a layer",
                      [self.figure(None, "max-feature images", "max-features")])
        for layer in layers:
            items = [self.figure(pick(self.summary, f"max_features_{name}_layer{layer}",
                                      f"max_features_{name}_layer{layer}_"),
                                 f"{name} discriminator, layer {layer}", "max-features")
                     for name in self.disc]
            self.page(f"Synthetic images maximising layer {layer} features", items, 2)

    def curve_pages(self):
        if "baseline" in self.disc:
            self.curves("baseline", "Training curves: the baseline classifier")
        settings = (self.gen or self.disc.get("gan") or {}).get("settings")
        if settings is not None:
            self.curves("gan", f"Training curves: {gan_title(settings)}")

    def samples_page(self):
        record = self.summary.get("samples")
        item = self.figure(record, "samples, one column per class" if self.conditional
                           else "samples, and interpolations between two noise vectors",
                           "samples")
        notes = []
        if item[1] is not None:
            if "baseline_agreement" in record:
                notes.append(f"the baseline classifies {record['baseline_agreement']:.1f}% of "
                             "the samples as the class they were generated for")
            notes.append("second image: each row interpolates between two noise vectors" +
                         (" of one class" if self.conditional else ""))
        self.page("Samples from the generator", [item], 2, notes)

    def quality_page(self):
        metrics = self.summary.get("metrics")
        notes = []
        if metrics and not fresh(metrics, self.digests, self.run_dir):
            notes.append("out of date: metrics.py's figures were made from an earlier model "
                         f"file; remake them with python metrics.py {shlex.quote(self.run_dir)}")
            self.stale.append("metrics.py's figures")
            metrics = None
        notes = quality_notes(metrics, os.path.join(self.run_dir, runfiles.log("gan"))) + notes
        if not notes:
            judged = "cfid,cacc,cconf" if self.conditional else "cfid,cconf"
            command = (f"python metrics.py {shlex.quote(self.run_dir)} --metrics "
                       + (judged if "baseline" in self.disc else "fid,is"))
            self.missing.append(f"sample-quality figures (made by {command})")
            notes = [f"missing: sample-quality figures; make them with {command}"]
        self.page("Sample quality", notes=notes)


CAPTIONS = {"real_images": "real images", "gradient_image": "gradients toward label+1",
            "altered_images": "altered images", "perturb_gain": "accuracy against gain",
            "samples": "samples", "interpolation": "interpolations"}


def describe(png):
    """A figure's caption from its file name."""
    name = os.path.basename(png)
    return next((c for k, c in CAPTIONS.items() if name.startswith(k)), name[:-4])


def shrink_images(path, quality=90):
    """Re-encode the PDF's images as JPEG (pypdf): far smaller, and 32-pixel pictures look
    the same at print size; and compress the pages' text and lines."""
    import io

    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=path)
    for page in writer.pages:
        for image in page.images:
            image.replace(image.image, quality=quality)
        page.compress_content_streams()
    buffer = io.BytesIO()
    writer.write(buffer)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def native_pixels(png):
    """A PNG as an array at its own pixels: this project's grids are drawn twice as large, and
    are taken back to one pixel per image pixel (the PDF viewer scales them up sharp)."""
    image = pyplot().imread(png)
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0 and (image[::2, ::2] == image[1::2, 1::2]).all() \
            and (image[::2, ::2] == image[::2, 1::2]).all():
        return image[::2, ::2]
    return image


def build_report(run_dir, vis_dir, path, paths=None):
    """Gather the run's hand-in into one PDF; returns the titles of its pages."""
    pyplot()  # off-screen
    paths = paths or {k: os.path.join(run_dir, f) for k, (f, _) in MODELS.items()}
    paths.setdefault("generator", runfiles.sampler(run_dir))
    return Report(run_dir, vis_dir, paths).write(path)
