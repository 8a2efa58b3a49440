"""Sample quality: torch-fidelity's FID, IS, KID and precision/recall, and the figures of this
project's own classifier (cfid, cprc, cacc, cconf), for metrics.py and train_gan.py --eval_every.
"""
import contextlib
import functools
import hashlib
import os
import re
import sys

import torch
import torch.nn.functional as F

from utils.checkpoints import load_model, safe_load
from utils.console import progress
from utils.errors import UserError
from utils.files import file_digest
from utils.runfiles import needs_classifier

METRICS = ("fid", "is", "kid", "prc", "cfid", "cprc", "cacc", "cconf")
INCEPTION_METRICS = ("fid", "is", "kid", "prc")  # read by the feature extractor, not the judge
CONFIDENT = 0.5  # cconf: a top probability of at least this (five times chance of 10 classes)
INCEPTION = "inception-v3-compat"
WEAK_JUDGE = 50.0  # % test accuracy below which a classifier's figures rank nothing
MIN_DISTANCE_IMAGES = 10  # fewer give a covariance too degenerate for a Frechet distance
PNG_NAME = re.compile(r"(\d+)(?:_c(\d+))?\.png$")


# ----------------------------------------------------------------------------- images

def read_folder(folder, n=None, seed=0):
    """A folder's PNG files (n of them drawn with seed, seeded_pick) as uint8 (N, C, S, S), and
    their classes where every name carries one (_cK), else None. All must match the first's
    size and channels."""
    import numpy as np

    from utils.images import read_image, shown

    names = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(".png") and not f.startswith("."))
    picked = seeded_pick(len(names), n, seed)  # names in class order are common
    names = names if picked is None else [names[i] for i in picked.tolist()]
    if not names:
        raise UserError(f"{folder} holds no PNG files")
    first = read_image(os.path.join(folder, names[0]))
    if first.shape[0] != first.shape[1]:
        raise UserError(f"{shown(os.path.join(folder, names[0]))} is not square: the metrics "
                        "read square images")
    arrays = [first] + [read_image(os.path.join(folder, name), size=first.shape[0])
                        for name in progress(names[1:], len(names) - 1, f"reading {folder}")]
    odd = next((name for name, a in zip(names, arrays) if a.shape != first.shape), None)
    if odd is not None:
        raise UserError(f"the PNG files in {folder} differ in channels: {names[0]} has "
                        f"{first.shape[-1]}, {shown(odd)} has another number")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, S, S, C) -> (N, C, S, S)
    classes = [PNG_NAME.match(name) for name in names]
    labels = (torch.tensor([int(m.group(2)) for m in classes])
              if all(m and m.group(2) is not None for m in classes) else None)
    return x.contiguous(), labels


class Images(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity reads them: (3, S, S), a grey image repeated to RGB."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x


# ----------------------------------------------------------------------------- extractors

def classifier_input(x, model):
    """uint8 images (B, C, S, S) as the classifier reads them: [-1, 1], its channels (a grey
    image repeated, or RGB averaged), its size."""
    x = x.float().div(127.5).sub(1)
    channels, size = model.build_args["in_channels"], model.build_args["image_size"]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def judge(path):
    """A classifier's model file, (model, ckpt), read once per version of the file: the checks
    and figures of one evaluation all ask for it."""
    if not os.path.isfile(path):
        return load_model(path, "discriminator", "train_baseline.py")  # says what is missing
    stat = os.stat(path)
    return _judge(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _judge(path, mtime_ns, size):
    return load_model(path, "discriminator", "train_baseline.py")


def classifier_extractor(path):
    """Register a classifier file as a torch-fidelity feature extractor ('pooled', what fc10
    reads; 'logits' for isc); its name holds the file's digest, so no cache is read for another."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    model, _ = judge(path)
    if not model.num_classes:
        raise UserError(f"{path} has no class head: cfid and cacc need a classifier")
    name = f"cnn-gan-classifier-{file_digest(path)}"
    if name in FEATURE_EXTRACTORS_REGISTRY:
        return name

    class ClassifierFeatures(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.model, _ = load_model(path, "discriminator", "train_baseline.py")

        @staticmethod
        def get_provided_features_list():
            return ("pooled", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "logits" if metric == "isc" else "pooled"

        @staticmethod
        def can_be_compiled():
            return False

        def forward(self, x):  # (B, 3, S, S) uint8; a grey image repeated averages back to itself
            pooled = self.model.embed(classifier_input(x, self.model))  # (B, features)
            out = {"pooled": pooled, "logits": self.model.fc10(pooled)}
            return tuple(out[k] for k in self.features_list)

    torch_fidelity.register_feature_extractor(name, ClassifierFeatures)
    return name


def check_inception(weights, metrics_flag="--metrics"):
    """The Inception weights are there (the file given, or torch's hub cache), or can be
    downloaded now; otherwise one line saying how to get them."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    if weights:
        state = load_checkpoint_plain(weights)
        if "fc.weight" not in state:
            raise UserError(f"{weights} is not torch-fidelity's InceptionV3 weights file")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:  # every tensor of the shape the network has, before any image is read
            FeatureExtractorInceptionV3(INCEPTION, ["2048"],
                                        feature_extractor_weights_path=weights)
        except (RuntimeError, KeyError, ValueError) as e:
            lines = str(e).strip().splitlines()
            detail = next((ln.strip() for ln in lines if "size mismatch" in ln
                           or "Missing key" in ln or "Unexpected key" in ln), lines[0])[:120]
            raise UserError(f"{weights} does not fit torch-fidelity's InceptionV3 ({detail}): "
                            "pass its own weights file (pt_inception-2015-12-05)") from None
        return
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(URL_INCEPTION_V3))
    if os.path.exists(cached):
        return
    try:  # torch's "Downloading" line to stderr: stdout ends in the result's JSON
        with contextlib.redirect_stdout(sys.stderr):
            torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False)
    except Exception as e:  # URLError, timeouts, HTTP errors: no network, or no access
        raise UserError(f"the Inception weights are not on this machine and could not be "
                        f"downloaded ({type(e).__name__}); fetch {URL_INCEPTION_V3} once where "
                        "there is internet and pass --inception_weights FILE (or put it in "
                        f"{os.path.dirname(cached)}), or use {metrics_flag} cfid,cacc") from None


def load_checkpoint_plain(path):
    """A plain state dict (tensors only), loaded with weights_only=True; else one line."""
    if not os.path.isfile(path):
        raise UserError(f"no weights file at {path}")
    try:
        state = safe_load(path)
    except Exception as e:
        raise UserError(f"{path} is not a readable weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return state


# ----------------------------------------------------------------------------- the metrics

def fidelity(fake, real, which, extractor, *, weights=None, device=None, cache_root=None,
             real_cache=None, splits=10, batch_size=250):
    """torch-fidelity's figures (which: of fid, is, kid, prc) for uint8 fake and real images, as
    {'fid', 'is', 'is_std', 'kid', 'kid_std', 'precision', 'recall', 'f_score'}: float}."""
    import torch_fidelity

    binary = bool({"fid", "kid", "prc"} & set(which))
    try:
        out = torch_fidelity.calculate_metrics(
            input1=Images(fake), input2=Images(real) if binary else None,
            cuda=device is not None and device.type == "cuda", batch_size=batch_size,
            isc="is" in which, fid="fid" in which, kid="kid" in which, prc="prc" in which,
            feature_extractor=extractor, feature_extractor_weights_path=weights or None,
            isc_splits=splits, kid_subset_size=min(1000, len(fake), len(real)),
            verbose=sys.stderr.isatty(),  # its progress bars, on a terminal
            save_cpu_ram=True,  # the images are in memory already: no loader workers
            cache=real_cache is not None, cache_root=cache_root,
            input2_cache_name=real_cache if binary else None)
    except ValueError as e:  # e.g. a covariance's square root with an imaginary part
        raise UserError(f"{', '.join(which)}: torch-fidelity could not compute it from "
                        f"{len(fake)} fake and {len(real)} real images ({str(e)[:100]}): use "
                        "more images") from None
    names = {"frechet_inception_distance": "fid", "inception_score_mean": "is",
             "inception_score_std": "is_std", "kernel_inception_distance_mean": "kid",
             "kernel_inception_distance_std": "kid_std", "precision": "precision",
             "recall": "recall", "f_score": "f_score"}
    return {names[k]: float(v) for k, v in out.items() if k in names}


def class_logits(images, model, batch_size, label):
    """(start, the model's class logits (B, classes)) for each batch of uint8 images."""
    for start in progress(range(0, len(images), batch_size), -(-len(images) // batch_size), label):
        yield start, model(classifier_input(images[start:start + batch_size], model))[1]


@torch.no_grad()
def class_accuracy(images, labels, classifier, batch_size=250):
    """The share (%) of images the classifier gives the class in labels."""
    model, _ = judge(classifier)
    if len(labels) and int(labels.max()) >= model.num_classes:
        raise UserError(f"cacc: a sample is marked class {int(labels.max())}, and the classifier "
                        f"{classifier} knows {model.num_classes} classes")
    hits = sum((logits.argmax(1) == labels[start:start + batch_size]).sum().item()
               for start, logits in class_logits(images, model, batch_size, "cacc"))
    return 100.0 * hits / len(images)


@torch.no_grad()
def class_confidence(images, classifier, batch_size=250):
    """The share (%) of samples the classifier gives a top probability of at least CONFIDENT,
    and how many classes those cover (a collapsed generator covers few)."""
    model, _ = judge(classifier)
    sure, found = 0, set()
    for _, logits in class_logits(images, model, batch_size, "cconf"):
        confidence, predicted = logits.softmax(1).max(1)
        sure += int((confidence >= CONFIDENT).sum())
        found |= set(predicted[confidence >= CONFIDENT].tolist())
    return 100.0 * sure / len(images), len(found)


def judge_strength(classifier):
    """(the classifier's own test accuracy in %, or None where its file does not say; a
    sentence on what that makes of cfid, cacc and cconf)."""
    _, ckpt = judge(classifier)
    acc = (ckpt.get("metrics") or {}).get("test_acc")
    if not isinstance(acc, (int, float)):
        return None, (f"the judge {classifier} records no test accuracy: cfid, cacc and cconf "
                      "are only as good as it is")
    if acc < WEAK_JUDGE:
        return acc, (f"warning: the judge {classifier} reaches only {acc:.1f}% test accuracy: "
                     "too weak to rank anything (a classifier at 15% scored pure noise better "
                     "than a trained ACGAN); train a stronger one (train_baseline.py)")
    return acc, (f"the judge {classifier} reaches {acc:.1f}% test accuracy; its figures compare "
                 "only with figures from the same judge")


def evaluate(fake, fake_labels, real, real_labels, metrics, *, classifier=None, intra=False,
             extractor=INCEPTION, weights=None, device=None, cache_root=None, real_name=None,
             splits=10, batch_size=250):
    """Every figure asked for, as a flat dict. real_name names the real images for the cache
    of their features (None: not cached)."""
    if needs_classifier(metrics):
        check_classifier_fits(classifier, fake.shape[1], fake.shape[-1])
    check_counts(metrics, fake_labels, real_labels, len(fake), len(real), splits,
                 intra and bool({"fid", "cfid"} & set(metrics)))
    out, common = {}, dict(weights=weights, device=device, cache_root=cache_root, splits=splits,
                           batch_size=batch_size)
    inception = [m for m in INCEPTION_METRICS if m in metrics]
    if inception:
        out.update(fidelity(fake, real, inception, extractor, real_cache=real_name, **common))
    if {"cfid", "cprc"} & set(metrics):  # one pass of the classifier for both
        name = classifier_extractor(classifier)
        which = ["fid"] * ("cfid" in metrics) + ["prc"] * ("cprc" in metrics)
        got = fidelity(fake, real, which, name, real_cache=real_name, **common)
        out.update({("cfid" if k == "fid" else k): v for k, v in got.items()})
    if "cacc" in metrics:
        if fake_labels is None:
            raise UserError("cacc needs class-conditional samples (a generator trained with "
                            "--acgan on, or PNG files named NNNNN_cK.png)")
        out["cacc"] = class_accuracy(fake, fake_labels, classifier, batch_size)
    if "cconf" in metrics:
        out["cconf"], out["cconf_classes"] = class_confidence(fake, classifier, batch_size)
    if needs_classifier(metrics):  # how far the classifier's figures can be trusted
        acc, _ = judge_strength(classifier)
        if acc is not None:
            out["judge_test_acc"] = acc
    distances = [(m, extractor if m == "fid" else classifier_extractor(classifier))
                 for m in ("fid", "cfid") if m in metrics]
    if intra and distances:
        if fake_labels is None or real_labels is None:
            raise UserError("--intra needs the classes of the fake and the real images")
        for metric, ext in distances:
            per_class = {}
            for c in sorted(set(fake_labels.tolist())):
                cache = None if real_name is None else f"{real_name}-c{c}"
                per_class[str(c)] = fidelity(fake[fake_labels == c], real[real_labels == c],
                                             ["fid"], ext, real_cache=cache, **common)["fid"]
            out[f"intra_{metric}"] = per_class
            out[f"intra_{metric}_mean"] = sum(per_class.values()) / len(per_class)
    return out


def seeded_pick(count, n, seed):
    """The indices (ascending) of n of count items drawn with `seed`, or None to take them all.
    Not the first n: a folder stored class by class would give a few classes only."""
    if n is None or n >= count:
        return None
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def seeded_share(x, y, n, seed):
    """n images of a dataset split drawn with `seed` (seeded_pick), or all of them; returns
    (x, y, the seed, or None when all were taken)."""
    picked = seeded_pick(len(y), n, seed)
    return (x, y, None) if picked is None else (x[picked], y[picked], seed)


def real_cache_name(dataset, data_dir, split, n, subset_seed=None):
    """The name torch-fidelity caches a dataset's features under: its name, folder, split, the
    count used and, for a --subset, the seed that chose it."""
    where = hashlib.sha1(os.path.abspath(data_dir or ".").encode()).hexdigest()[:8]
    chosen = "" if subset_seed is None else f"-seed{subset_seed}"
    return f"cnn-gan-{dataset}-{where}-{split}-{n}{chosen}"


def check_classifier_fits(classifier, channels, size):
    """The classifier reads images of the samples' shape (else it judges images of a kind it
    was never trained on), or one line."""
    model, _ = judge(classifier)
    want = (model.build_args.get("in_channels"), model.build_args.get("image_size"))
    if want != (channels, size):
        raise UserError(f"the classifier {classifier} reads {want[0]}-channel {want[1]}x{want[1]}"
                        f" images, and the samples are {channels}-channel {size}x{size}: judge "
                        "with a classifier trained on the samples' dataset")


def check_request(metrics, classifier=None, weights=None, extractor=INCEPTION,
                  conditional=True, classes=None, flag="--classifier",
                  metrics_flag="--metrics"):
    """Everything the metrics asked for need is there, before any work (classes: the
    generator's class names, where known; cacc needs the classifier's to be the same)."""
    if {"prc", "cprc"} <= set(metrics):
        raise UserError("prc and cprc name the same figures (precision, recall): ask for one")
    if {"fid", "is", "kid", "prc", "cfid", "cprc"} & set(metrics):
        from utils.extras import require

        require("torch_fidelity", "fid, is, kid, prc, cfid and cprc (torch-fidelity computes "
                                  "them)")
    if set(INCEPTION_METRICS) & set(metrics):
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY as registry

        if extractor not in registry:
            known = sorted(k for k in registry if not k.startswith("cnn-gan-"))
            raise UserError(f"--feature_extractor {extractor}: torch-fidelity has no such "
                            f"feature extractor; choose one of {', '.join(known)}")
        if extractor == INCEPTION:
            check_inception(weights, metrics_flag)
    if needs_classifier(metrics):
        if not (classifier and os.path.isfile(classifier)):
            raise UserError(f"cfid, cacc and cconf need a classifier: pass a model file that "
                            f"train_baseline.py wrote with {flag}")
        classifier_extractor(classifier)  # a class head, or one line
    if "cacc" in metrics and not conditional:
        raise UserError("cacc needs a class-conditional generator (--acgan on)")
    if "cacc" in metrics and classes:
        theirs = list(judge(classifier)[1]["classes"])
        if theirs and list(classes) != theirs:
            raise UserError(f"cacc: the classifier {classifier} names the classes "
                            f"{', '.join(theirs[:4])}..., the generator "
                            f"{', '.join(list(classes)[:4])}...: judge with a classifier of "
                            "the generator's dataset")


def check_counts(metrics, fake_labels, real_labels, n_fake, n_real, splits=10, intra=False,
                 flag="--n_samples"):
    """Each metric has the images it needs (a distance MIN_DISTANCE_IMAGES, the Inception
    Score one per split), said in one line before any work."""
    need, least = [], MIN_DISTANCE_IMAGES
    if {"fid", "cfid", "kid"} & set(metrics) and min(n_fake, n_real) < least:
        need.append(f"fid, cfid and kid need at least {least} fake and {least} real images for "
                    f"a meaningful distance (here {n_fake} and {n_real}: raise {flag})")
    if {"prc", "cprc"} & set(metrics) and min(n_fake, n_real) < 4:
        need.append(f"prc and cprc need at least 4 fake and 4 real images (a sample's 3 "
                    f"nearest neighbours; here {n_fake} and {n_real})")
    if "is" in metrics and n_fake < splits:
        need.append(f"is needs at least --splits {splits} fake images (here {n_fake})")
    if intra and fake_labels is not None and real_labels is not None:
        # each class's distance needs what the whole one does
        each = least if {"fid", "cfid", "kid"} & set(metrics) else \
            4 if {"prc", "cprc"} & set(metrics) else 2
        for c in sorted(set(fake_labels.tolist())):
            f, r = int((fake_labels == c).sum()), int((real_labels == c).sum())
            if min(f, r) < each:
                need.append(f"--intra needs at least {each} fake and {each} real images of "
                            f"each class (class {c}: {f} and {r}: raise {flag})")
                break
    if need:
        raise UserError("; ".join(need))


def parse_metrics(text):
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UserError(f"--metrics {text}: choose from {', '.join(METRICS)}")
    return chosen
