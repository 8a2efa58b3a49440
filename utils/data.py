"""Datasets chosen by name (docs/data.md), held in memory as uint8 (N, C, S, S), and the seeded
batches cut from them. All randomness of the data comes from generators seeded by (seed, epoch,
batch, rank), so any batch can be rebuilt exactly: a resumed run equals an uninterrupted one.
"""
import contextlib
import copy
import hashlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import DataError, UserError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot")
DIGITS = tuple(str(i) for i in range(10))
DIGITS_VERSION = 1  # of load_digits's images: a new one is cached apart from the old


@dataclass
class ImageData:
    """A whole dataset in memory: images uint8 (N, C, S, S), labels int64 (N,)."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple
    flip: bool  # horizontal flips suit this dataset (not digits)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def channels(self):
        return self.train_x.shape[1]

    @property
    def image_size(self):
        return self.train_x.shape[-1]


def derive_seed(*keys):
    """A 63-bit seed that is a pure function of the keys (run seed, epoch, batch, rank, ...)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(device, *keys):
    return torch.Generator(device=device).manual_seed(derive_seed(*keys))


# ----------------------------------------------------------------------------- loading

def _folder_signature(root):
    """What the cache key depends on: the folder's real path (a link to it shares the cache)
    and every file's name, size and modification time."""
    root = os.path.realpath(root)
    h = hashlib.sha1(root.encode("utf-8", "surrogateescape"))
    for split in ("train", "test"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, split)):
            dirnames.sort()
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                try:
                    st = os.stat(path)
                except OSError:  # a broken link: decoding says so
                    st = os.lstat(path)
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}".encode(
                    "utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnn_gan")


def _read_cache(cache, name, flip=True):
    """The decoded dataset from its cache, or None when it is missing or damaged in any way
    (rebuilt)."""
    if not os.path.isfile(cache):
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: torch.from_numpy(z[k].copy()) for k in
                      ("train_x", "train_y", "test_x", "test_y")}
            classes = tuple(str(c) for c in z["classes"])
        x, y = arrays["train_x"], arrays["train_y"]
        if x.dtype != torch.uint8 or x.dim() != 4 or len(x) != len(y) or not classes \
                or arrays["test_x"].shape[1:] != x.shape[1:]:
            return None
        return ImageData(name, classes=classes, flip=flip, **arrays)
    except Exception:  # zip, EOF, value, key, anything: a damaged cache is rebuilt
        return None


def _write_cache(cache, data):
    """Save a decoded dataset where _read_cache finds it; a cache that cannot be written is
    said, not fatal."""
    from utils.files import atomic_path, remove_stale_temps

    arrays = {k: getattr(data, k).numpy() for k in ("train_x", "train_y", "test_x", "test_y")}
    try:
        remove_stale_temps(os.path.dirname(cache))
        with atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, **arrays, classes=np.array(data.classes))
    except UserError as e:  # a read-only home or a full disk is no reason to stop
        print(f"warning: the decoded images were not cached ({e})", file=sys.stderr)


def load_folder(root, cache_dir=None, name="folder"):
    """An image folder, train/<class>/ and test/<class>/ (utils/images.py), decoded once and
    cached as .npz."""
    from utils.images import decode_split

    if not os.path.exists(root):
        raise DataError(f"data directory {root} does not exist")
    if not os.path.isdir(root):
        raise DataError(f"--data_dir {root} is a file, not a folder")
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"{root} has no {split}/ folder: --data_dir must hold "
                            "train/<class>/*.png and test/<class>/*.png")
    cache_dir = cache_dir or default_cache_dir()
    cache = os.path.join(cache_dir, f"folder-{_folder_signature(root)}.npz")
    data = _read_cache(cache, name)
    if data is not None:
        return data
    print(f"decoding {root}: once, about 30 s for CIFAR-10's 60,000 files on two cores; "
          f"cached in {cache_dir}", file=sys.stderr)
    train_x, train_y, classes = decode_split(os.path.join(root, "train"))
    test_x, test_y, _ = decode_split(os.path.join(root, "test"), classes)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    data = ImageData(name, nchw(train_x), torch.from_numpy(train_y), nchw(test_x),  # NHWC -> NCHW
                     torch.from_numpy(test_y), classes, flip=True)
    _write_cache(cache, data)
    return data


def load_cifar10(data_dir, cache_dir=None):
    """CIFAR-10 from torchvision's files in data_dir (downloaded when missing) or a PNG folder."""
    for root in (data_dir, os.path.join(data_dir, "cifar10")):
        if all(os.path.isdir(os.path.join(root, split)) for split in ("train", "test")):
            data = load_folder(root, cache_dir, name="cifar10")
            if data.classes != CIFAR10_CLASSES:
                raise DataError(f"{root} holds classes {list(data.classes)}, not CIFAR-10's; "
                                "use --dataset folder for other image folders")
            return data
    sets = [_torchvision("CIFAR10", data_dir, CIFAR10_FILES, train=t) for t in (True, False)]
    (tx, ty), (vx, vy) = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(),
                           torch.tensor(s.targets, dtype=torch.int64)) for s in sets]
    return ImageData("cifar10", tx, ty, vx, vy, CIFAR10_CLASSES, flip=True)


def load_digits(data_dir=None, cache_dir=None):
    """scikit-learn's 8x8 digits (values 0..16) as 32x32 RGB uint8, split 1,500 / 297 (fixed);
    cached as .npz like a folder, because importing scikit-learn takes about a second, a
    fifth of a small run's start."""
    cache = os.path.join(cache_dir or default_cache_dir(), f"digits-{DIGITS_VERSION}.npz")
    data = _read_cache(cache, "digits", flip=False)
    if data is not None and data.classes == DIGITS and len(data.train_y) == 1500:
        return data
    from utils.extras import require

    d = require("sklearn.datasets", "the digits dataset").load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1500], perm[1500:]
    data = ImageData("digits", x[tr], y[tr], x[te], y[te], DIGITS, flip=False)
    _write_cache(cache, data)
    return data


CIFAR10_FILES = tuple(f"cifar-10-batches-py/{f}" for f in
                      ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))))


def _torchvision(dataset, data_dir, files, **kw):
    """A torchvision dataset read from data_dir, which must hold `files` (paths relative to it;
    missing ones are downloaded, _download_only). Unreadable files are reported as damaged,
    never replaced. torchvision's prints go to stderr: stdout is kept for the final JSON line."""
    import torchvision

    _download_only(dataset, data_dir, files, **kw)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return getattr(torchvision.datasets, dataset)(data_dir, download=False, **kw)
    except Exception as e:  # torchvision's checks, numpy's reshape, EOF: the files are bad
        top = os.path.join(data_dir, files[0].split("/")[0])
        raise DataError(f"{dataset}'s files in {data_dir} are damaged or incomplete "
                        f"({type(e).__name__}: {str(e)[:120]}): replace them, or delete {top} "
                        "so that they are downloaded again") from None


def _download_only(dataset, data_dir, files, **kw):
    """Fetch a dataset's missing files into data_dir, without loading it: through a temporary
    folder, so a failed download (no network) creates nothing where the user's data lives."""
    import shutil
    import tempfile

    import torchvision

    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} is a file, not a folder")
    missing = [f for f in files if not os.path.isfile(os.path.join(data_dir, f))]
    if not missing:
        return
    tmp = tempfile.mkdtemp(prefix="cnn_gan-download-")
    try:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                getattr(torchvision.datasets, dataset)(tmp, download=True, **kw)
        except Exception as e:  # URLError, timeouts, HTTP errors, checksum failures
            looked = ", ".join(os.path.join(data_dir, f) for f in missing[:2])
            more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
            top = files[0].split("/")[0]
            own = os.path.basename(os.path.normpath(data_dir)) in (top, "raw")
            hint = (f"; {data_dir} looks like the dataset's own folder: --data_dir names the "
                    "folder that holds it") if own else ""
            raise DataError(f"{dataset} not found: looked for {looked}{more}, and the download "
                            f"failed ({type(e).__name__}){hint}. Point --data_dir at the folder "
                            f"holding {top if '/' in files[0] else ', '.join(files)}") from None
        tops = {f.split("/")[0] for f in files}
        for dirpath, _, names in os.walk(tmp):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), tmp)
                target = os.path.join(data_dir, rel)
                if rel.split(os.sep)[0] in tops and not os.path.exists(target):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.move(os.path.join(dirpath, name), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_mnist(data_dir, cache_dir=None, dataset="MNIST", classes=DIGITS, flip=False):
    """MNIST, or FashionMNIST (load_fashion_mnist), in torchvision's layout: (N, 1, 28, 28)."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    files = tuple(f"{dataset}/raw/{f}" for f in names)
    sets = [_torchvision(dataset, data_dir, files, train=t) for t in (True, False)]
    (tx, ty), (vx, vy) = [(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in sets]
    name = "mnist" if dataset == "MNIST" else "fashion_mnist"
    return ImageData(name, tx, ty, vx, vy, classes, flip=flip)


def load_fashion_mnist(data_dir, cache_dir=None):
    return load_mnist(data_dir, cache_dir, "FashionMNIST", FASHION_CLASSES, flip=True)


def load_svhn(data_dir, cache_dir=None):
    """SVHN's train_32x32.mat and test_32x32.mat (downloaded when missing), read directly:
    X is (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0."""
    from utils.extras import require

    sio = require("scipy.io", "SVHN (its .mat files)")
    out = []
    for split in ("train", "test"):
        path = os.path.join(data_dir, f"{split}_32x32.mat")
        if not os.path.exists(path):
            _download_only("SVHN", data_dir, (f"{split}_32x32.mat",), split=split)
        try:
            mat = sio.loadmat(path)
            x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))
            y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1))
        except (OSError, ValueError, KeyError, TypeError, sio.matlab.MatReadError) as e:
            raise DataError(f"{path} is not an SVHN file ({type(e).__name__}: {e})") from None
        if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or len(x) != len(y) \
                or not ((y >= 1) & (y <= 10)).all():
            raise DataError(f"{path} is not an SVHN file: X must be 32x32x3xN uint8 and y the "
                            "N labels 1..10")
        out += [x, torch.where(y == 10, 0, y)]  # the label 10 marks the digit 0
    return ImageData("svhn", *out, DIGITS, flip=False)


DATASETS = {"cifar10": load_cifar10, "folder": load_folder, "digits": load_digits,
            "mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "svhn": load_svhn}


def load_dataset(name, data_dir, cache_dir=None, subset=None, seed=0, labels_per_class=None):
    """Load a dataset by name; subset keeps N training images chosen by a seeded permutation,
    labels_per_class the first N of each class in that permutation (the few labelled images of
    a semi-supervised comparison)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if name == "folder" and os.path.isdir(data_dir) and not os.listdir(data_dir):
        raise DataError(f"data directory {data_dir} is empty")  # load_folder checks the rest
    data = DATASETS[name](data_dir, cache_dir)
    if subset is not None:
        if subset > len(data.train_y):
            raise DataError(f"--subset {subset} is larger than the {len(data.train_y)} training "
                            f"images of {name}")
        keep = torch.randperm(len(data.train_y), generator=make_generator("cpu", seed, "subset"))
        keep = keep[:subset].sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    if labels_per_class is not None:
        counts = torch.bincount(data.train_y, minlength=data.num_classes)
        if labels_per_class > counts.min():
            raise DataError(f"--labels_per_class {labels_per_class}: {name}'s smallest class has "
                            f"{counts.min().item()} training images")
        order = torch.randperm(len(data.train_y), generator=make_generator("cpu", seed, "labels"))
        ranked = data.train_y[order]  # the first labels_per_class of each class in this order
        keep = torch.cat([order[ranked == c][:labels_per_class] for c in range(data.num_classes)])
        keep = keep.sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    return data


# ----------------------------------------------------------------------------- batching

def to_float(x_uint8):
    """uint8 images in [0, 255] -> float in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


class Batches:
    """Batches of a uint8 dataset as float tensors in [-1, 1] on a device: epoch(e, start)
    yields (x, y) from batch start of epoch e, shuffled and augmented by (seed, e, batch, rank);
    under several processes each rank takes every world_size-th image of the order."""

    def __init__(self, images, labels, batch_size, device="cpu", *, seed=0, shuffle=False,
                 drop_last=False, min_last=1, augment=None, rank=0, world_size=1,
                 on_device=False, memory_format=torch.contiguous_format):
        self.device = torch.device(device)
        # on_device: the whole uint8 dataset on the GPU, a batch an index into it (no host copy)
        where = self.device if on_device else "cpu"
        self.images, self.labels = images.to(where), labels.to(where)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.min_last = min_last  # a smaller last batch is kept when it has this many images
        self.rank, self.world_size, self.memory_format = rank, world_size, memory_format
        self.per_rank = len(labels) // world_size  # equal shares: ranks step in lockstep

    def rebatched(self, batch_size, min_last=1):
        """The same images, labels and settings in batches of another size (a last batch
        smaller than min_last left out: BatchNorm in training mode needs two images)."""
        other = copy.copy(self)
        other.batch_size, other.min_last = batch_size, max(self.min_last, min_last)
        return other

    def __len__(self):
        n, b = self.per_rank, self.batch_size
        return n // b + int(not self.drop_last and n % b >= self.min_last)

    @property
    def epoch_images(self):
        """Images an epoch goes through, over every process."""
        return min(len(self) * self.batch_size, self.per_rank) * self.world_size

    def order(self, epoch):
        n = len(self.labels)
        idx = (torch.randperm(n, generator=make_generator("cpu", self.seed, "shuffle", epoch))
               if self.shuffle else torch.arange(n))
        return idx[self.rank:self.per_rank * self.world_size:self.world_size]

    def epoch(self, epoch, start=0):
        idx = self.order(epoch).to(self.images.device)
        pin = self.images.device.type == "cpu" and self.device.type == "cuda"
        for i in range(start, len(self)):
            sel = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.images[sel], self.labels[sel]
            if pin:  # an asynchronous copy needs page-locked memory
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.augment is None:
                x = to_float(x)
            else:  # the transforms work in [0, 1], as torchvision's do before Normalize
                g = make_generator(self.device, self.seed, "augment", epoch, i, self.rank)
                x = self.augment(x.float().div_(255), g).mul_(2).sub_(1)
            yield x.contiguous(memory_format=self.memory_format), y
