"""How good are the samples: FID, Inception Score and KID through torch-fidelity, and two
metrics that need no download, from this project's own classifier.

    python metrics.py runs/cifar10                 # the run's generator: FID and IS on 50,000
                                                   # samples against its training set
    python metrics.py runs/cifar10 --metrics fid,is,kid,cfid,cacc --intra
    python metrics.py runs/dcgan/fakes --real mnist --data_dir ../shared/data
    python metrics.py runs/cifar10 --inception_weights ~/weights-inception-2015-12-05-6726825d.pth
    python metrics.py runs/cifar10 --metrics cfid,cacc --classifier runs/cifar10/cifar10.model

FAKE is a run folder (its generator.model is sampled, class-balanced when it is conditional)
or a folder of PNG files (what `visualize.py export` writes, or any other program; a name
ending in _cK marks class K). REAL is a dataset name (default the run's dataset; its training
split, --split) or a folder of PNG files.

    fid, is, kid   Frechet Inception Distance, Inception Score (--splits 10) and Kernel Inception
                   Distance, computed by torch-fidelity on its TensorFlow-compatible InceptionV3
                   (or any extractor it has registered: --feature_extractor)
    cfid           the Frechet distance of the classifier's pooled features (the inputs of its
                   fc10), computed by torch-fidelity with that classifier as its extractor
    cacc           the share of class-conditional samples the classifier gives their class
    --intra        each distance also per class (intra-FID), and the mean over the classes

The Inception weights are downloaded once (about 100 MB) into torch's hub cache; on a machine
without internet, fetch the file on one that has it and pass --inception_weights. The real
images' features are cached by torch-fidelity per dataset, split, count and extractor
(--cache_dir), so a second evaluation reads them in seconds. The last line on stdout is JSON
with every figure; for a run folder the figures also go to RUN/metrics.json and to
RUN/visualization/summary.json, which the report quotes.
"""
import hashlib
import json
import os
import re
import time

import torch
import torch.nn.functional as F

from checkpoints import load_model
from cli import POSITIVE_INT, ArgumentParser, UserError, info, run_main
from data import DATASETS, default_cache_dir, load_dataset, make_generator
from runtime import resolve_device

METRICS = ("fid", "is", "kid", "cfid", "cacc")
INCEPTION = "inception-v3-compat"
PNG_NAME = re.compile(r"(\d+)(?:_c(\d+))?\.png$")


def build_parser():
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fake", help="a run folder (its generator is sampled) or a folder of PNG files")
    p.add_argument("--real", default=None,
                   help="a dataset name or a folder of PNG files (default: the run's dataset)")
    p.add_argument("--data_dir", default=None, help="where the dataset lives (default: the run's)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="which split of the dataset is the real data")
    p.add_argument("--metrics", default="fid,is",
                   help=f"comma-separated, from {', '.join(METRICS)}")
    p.add_argument("--intra", action="store_true",
                   help="also each distance per class (intra-FID) and its mean")
    p.add_argument("--n_samples", type=POSITIVE_INT, default=50000,
                   help="samples drawn from a generator (50,000: what papers report FID and IS "
                        "on); for a folder of PNG files, at most this many of its files")
    p.add_argument("--n_real", type=POSITIVE_INT, default=None,
                   help="real images used (default every image of the split)")
    p.add_argument("--splits", type=POSITIVE_INT, default=10, help="Inception Score splits")
    p.add_argument("--classifier", default=None,
                   help="the classifier for cfid and cacc (default RUN/cifar10.model, what "
                        "train_baseline.py writes)")
    p.add_argument("--inception_weights", default=None,
                   help="torch-fidelity's InceptionV3 weights file, for machines without "
                        "internet (weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--feature_extractor", default=INCEPTION,
                   help="the extractor torch-fidelity uses for fid, is and kid")
    p.add_argument("--cache_dir", default=None,
                   help="where the real images' features are cached (default "
                        "~/.cache/cnn_gan/fidelity); also the decoded image folders' cache")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=250, help="images per batch")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples drawn")
    return p


# ----------------------------------------------------------------------------- images

def as_uint8(images):
    """Images in [-1, 1] (B, C, S, S) -> uint8 in [0, 255], the PNG files' values."""
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@torch.no_grad()
def sample_generator(G, n, num_classes, seed, device, kind="normal", batch_size=250):
    """n samples of G as uint8 (n, C, S, S) and their classes (balanced: i % num_classes) or
    None for an unconditional generator."""
    from visualize import latent

    G = G.to(device).eval()
    g, out = make_generator(device, seed, "metrics"), []
    labels = torch.arange(n) % num_classes if num_classes else None
    for start in range(0, n, batch_size):
        part = None if labels is None else labels[start:start + batch_size].to(device)
        count = min(batch_size, n - start)
        out.append(as_uint8(G(latent(G, part, count, num_classes, g, kind))))
    return torch.cat(out), labels


def read_folder(folder, n=None):
    """The PNG files of a folder (names sorted) as uint8 (N, C, S, S), with their classes where
    every name carries one (_cK), else None."""
    import numpy as np
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))[:n]
    if not names:
        raise UserError(f"{folder} holds no PNG files")
    arrays = []
    for name in names:
        with Image.open(os.path.join(folder, name)) as im:
            arrays.append(np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB")))
    if len({a.shape for a in arrays}) > 1:
        raise UserError(f"the PNG files in {folder} differ in size or mode")
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, S, S)
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
    channels, size = model.arch["in_channels"], model.arch["image_size"]
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def _file_digest(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def classifier_extractor(path):
    """Register this project's classifier (a model file with a class head) as a torch-fidelity
    feature extractor: 'pooled' (what fc10 reads) for distances, 'logits' for the Inception
    Score's place. Returns its registered name, which names the file's content, so cached
    features of one classifier are never read for another."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    model, _ = load_model(path, "discriminator", "train_baseline.py")
    if not model.num_classes:
        raise UserError(f"{path} has no class head: cfid and cacc need a classifier")
    name = f"cnn-gan-classifier-{_file_digest(path)}"
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

        def forward(self, x):  # (B, 3, S, S) uint8
            m = self.model
            x = classifier_input(x, m)  # a grey image repeated to RGB averages back to itself
            pooled = m.embed(x)  # (B, features)
            out = {"pooled": pooled, "logits": m.fc10(pooled)}
            return tuple(out[k] for k in self.features_list)

    torch_fidelity.register_feature_extractor(name, ClassifierFeatures)
    return name


def check_inception(weights):
    """The Inception weights are there (the file given, or torch's hub cache), or can be
    downloaded now; otherwise one line saying how to get them."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    if weights:
        state = load_checkpoint_plain(weights)
        if "fc.weight" not in state:
            raise UserError(f"{weights} is not torch-fidelity's InceptionV3 weights file")
        return
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(URL_INCEPTION_V3))
    if os.path.exists(cached):
        return
    try:
        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, progress=False)
    except Exception as e:  # URLError, timeouts, HTTP errors: no network, or no access
        raise UserError(
            f"the Inception weights are not on this machine and could not be downloaded "
            f"({type(e).__name__}); fetch {URL_INCEPTION_V3} once where there is internet and "
            "pass --inception_weights FILE (or put it in "
            f"{os.path.dirname(cached)}), or use --metrics cfid,cacc") from None


def load_checkpoint_plain(path):
    """A plain state dict (tensors only), loaded with weights_only=True; else one line."""
    if not os.path.isfile(path):
        raise UserError(f"no weights file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return state


# ----------------------------------------------------------------------------- the metrics

def fidelity(fake, real, which, extractor, *, weights=None, device=None, cache_root=None,
             real_cache=None, splits=10, batch_size=250):
    """torch-fidelity's figures for uint8 fake and real images: which from {'fid', 'is',
    'kid'}; returns {'fid': ..., 'is': ..., 'is_std': ..., 'kid': ..., 'kid_std': ...}."""
    import torch_fidelity

    binary = bool({"fid", "kid"} & set(which))
    kwargs = dict(input1=Images(fake), input2=Images(real) if binary else None,
                  cuda=device is not None and device.type == "cuda", batch_size=batch_size,
                  isc="is" in which, fid="fid" in which, kid="kid" in which,
                  feature_extractor=extractor, isc_splits=splits, verbose=False,
                  save_cpu_ram=True,  # the images are in memory already: no loader workers
                  cache=real_cache is not None, cache_root=cache_root,
                  input2_cache_name=real_cache if binary else None)
    if weights:
        kwargs["feature_extractor_weights_path"] = weights
    if "kid" in which:
        kwargs["kid_subset_size"] = min(1000, len(fake), len(real))
    out = torch_fidelity.calculate_metrics(**kwargs)
    names = {"frechet_inception_distance": "fid", "inception_score_mean": "is",
             "inception_score_std": "is_std", "kernel_inception_distance_mean": "kid",
             "kernel_inception_distance_std": "kid_std"}
    return {names[k]: float(v) for k, v in out.items() if k in names}


@torch.no_grad()
def class_accuracy(images, labels, classifier, batch_size=250):
    """The share (%) of images the classifier gives the class in labels."""
    model, _ = load_model(classifier, "discriminator", "train_baseline.py")
    hits = 0
    for start in range(0, len(images), batch_size):
        x = classifier_input(images[start:start + batch_size], model)
        hits += (model(x)[1].argmax(1) == labels[start:start + batch_size]).sum().item()
    return 100.0 * hits / len(images)


def evaluate(fake, fake_labels, real, real_labels, metrics, *, classifier=None, intra=False,
             extractor=INCEPTION, weights=None, device=None, cache_root=None, real_name=None,
             splits=10, batch_size=250):
    """Every figure asked for, as a flat dict. real_name names the real images for the cache
    of their features (None: not cached)."""
    out, common = {}, dict(weights=weights, device=device, cache_root=cache_root, splits=splits,
                           batch_size=batch_size)
    inception = [m for m in ("fid", "is", "kid") if m in metrics]
    if inception:
        out.update(fidelity(fake, real, inception, extractor, real_cache=real_name, **common))
    if "cfid" in metrics:
        name = classifier_extractor(classifier)
        out["cfid"] = fidelity(fake, real, ["fid"], name, real_cache=real_name, **common)["fid"]
    if "cacc" in metrics:
        if fake_labels is None:
            raise UserError("cacc needs class-conditional samples (a generator trained with "
                            "--acgan on, or PNG files named NNNNN_cK.png)")
        out["cacc"] = class_accuracy(fake, fake_labels, classifier, batch_size)
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


# ----------------------------------------------------------------------------- the command

def real_cache_name(dataset, data_dir, split, n, subset_seed=None):
    """The name torch-fidelity caches a dataset's features under: its name, folder, split, the
    count used and, for a --subset, the seed that chose it."""
    where = hashlib.sha1(os.path.abspath(data_dir or ".").encode()).hexdigest()[:8]
    chosen = "" if subset_seed is None else f"-seed{subset_seed}"
    return f"cnn-gan-{dataset}-{where}-{split}-{n}{chosen}"


def check_request(metrics, classifier=None, weights=None, extractor=INCEPTION,
                  conditional=True):
    """Everything the metrics asked for needs is there, before any work: the Inception
    weights, a classifier with a class head, class-conditional samples for cacc."""
    if {"fid", "is", "kid"} & set(metrics) and extractor == INCEPTION:
        check_inception(weights)
    if {"cfid", "cacc"} & set(metrics):
        if not (classifier and os.path.isfile(classifier)):
            raise UserError("cfid and cacc need a classifier: pass a model file that "
                            "train_baseline.py wrote (--classifier, --eval_classifier)")
        classifier_extractor(classifier)  # a class head, or one line
    if "cacc" in metrics and not conditional:
        raise UserError("cacc needs a class-conditional generator (--acgan on)")


def parse_metrics(text):
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METRICS]
    if bad or not chosen:
        raise UserError(f"--metrics {text}: choose from {', '.join(METRICS)}")
    return chosen


def main(argv=None):
    args = build_parser().parse_args(argv)
    metrics = parse_metrics(args.metrics)
    device = resolve_device(args.device)
    t0 = time.time()
    run_dir = args.fake if os.path.isfile(os.path.join(args.fake, "generator.model")) else None
    classifier = args.classifier or (os.path.join(run_dir, "cifar10.model") if run_dir else None)
    check = dict(classifier=classifier, weights=args.inception_weights,
                 extractor=args.feature_extractor)
    settings = {}
    if run_dir:  # everything checked before the samples are drawn
        from visualize import conditioning

        G, ckpt = load_model(os.path.join(run_dir, "generator.model"), "generator",
                             "train_gan.py")
        settings = ckpt["settings"]
        num_classes, kind = conditioning(ckpt)
        check_request(metrics, conditional=num_classes > 0, **check)
        fake, fake_labels = sample_generator(G, args.n_samples, num_classes, args.seed, device,
                                             kind, args.batch_size)
    elif os.path.isdir(args.fake):
        fake, fake_labels = read_folder(args.fake, args.n_samples)
        check_request(metrics, conditional=fake_labels is not None, **check)
    else:
        raise UserError(f"{args.fake} is neither a run folder (with generator.model) nor a "
                        "folder of PNG files")

    real_arg = args.real or settings.get("dataset")
    if real_arg is None:
        raise UserError("--real: name the dataset or a folder of real PNG files")
    cache_root = os.path.join(args.cache_dir or default_cache_dir(), "fidelity")
    if os.path.isdir(real_arg):
        real, real_labels = read_folder(real_arg, args.n_real)
        real_name = None  # a folder's content may change: not cached
    elif real_arg in DATASETS:
        data_dir = args.data_dir or settings.get("data_dir", "./data")
        data = load_dataset(real_arg, data_dir, args.cache_dir)
        real, real_labels = ((data.train_x, data.train_y) if args.split == "train"
                             else (data.test_x, data.test_y))
        real, real_labels = real[:args.n_real], real_labels[:args.n_real]
        real_name = real_cache_name(real_arg, data_dir, args.split, len(real))
    else:
        raise UserError(f"--real {real_arg}: not a folder, nor one of {', '.join(DATASETS)}")
    if fake.shape[1:] != real.shape[1:] and {"fid", "kid", "cfid"} & set(metrics):
        info(f"note: fake images {tuple(fake.shape[1:])} and real {tuple(real.shape[1:])} "
             "differ in shape; the extractor resizes both")
    info(f"{len(fake)} fake and {len(real)} real images; metrics {', '.join(metrics)}")
    figures = evaluate(fake, fake_labels, real, real_labels, metrics, classifier=classifier,
                       intra=args.intra, extractor=args.feature_extractor,
                       weights=args.inception_weights, device=device, cache_root=cache_root,
                       real_name=real_name, splits=args.splits, batch_size=args.batch_size)
    result = dict(script="metrics", fake=args.fake, real=real_arg, split=args.split,
                  n_fake=len(fake), n_real=len(real), extractor=args.feature_extractor,
                  **figures, seconds=round(time.time() - t0, 1))
    for k, v in figures.items():
        if not isinstance(v, dict):
            info(f"{k}: {v:.4g}")
    if run_dir:
        write_json(os.path.join(run_dir, "metrics.json"), result)
        record_summary(os.path.join(run_dir, "visualization", "summary.json"), result)
    print(json.dumps(result), flush=True)
    return result


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def record_summary(path, result):
    """Put the figures into visualize.py's summary.json (key 'metrics'), keeping the rest."""
    summary = {}
    if os.path.exists(path):
        with open(path) as f:
            summary = json.load(f)
    summary["metrics"] = result
    write_json(path, summary)


if __name__ == "__main__":
    run_main(main)
