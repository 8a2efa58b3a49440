"""Datasets chosen by name, held in memory as uint8, and batched augmentation.

Every dataset is decoded once into uint8 tensors of shape (N, C, S, S); batches are cut
from them, moved to the training device and augmented there, a whole batch at a time, with
per-sample random parameters. All randomness of the data comes from generators seeded by
(seed, epoch, batch, rank), so any batch of any epoch can be rebuilt exactly: this is what
makes a resumed run equal an uninterrupted one.

    cifar10        torchvision's CIFAR10 (downloaded when missing), or a folder as below
    folder         DIR/train/<class>/*.png and DIR/test/<class>/*.png, 32x32; decoded once, cached
    digits         scikit-learn's 8x8 handwritten digits upsampled to 32x32 RGB: small, offline
    mnist          torchvision's MNIST, 28x28 grey (DATA_DIR/MNIST/raw), downloaded when missing
    fashion_mnist  torchvision's FashionMNIST, 28x28 grey (DATA_DIR/FashionMNIST/raw)
    svhn           the Street View House Numbers, 32x32 RGB (DATA_DIR/{train,test}_32x32.mat)
"""
import contextlib
import hashlib
import math
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(Exception):
    """A dataset that cannot be found or read; the message says what to do."""


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

def _decode_folder(split_dir, classes=None):
    """Decode DIR/<class>/* into uint8 (N, 3, H, W) and labels; classes sorted by name."""
    from PIL import Image, UnidentifiedImageError

    if classes is None:
        classes = sorted(d for d in os.listdir(split_dir)
                         if os.path.isdir(os.path.join(split_dir, d)))
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            raise DataError(f"{split_dir} has no folder '{name}': train/ and test/ must hold "
                            "the same class folders")
        for fname in sorted(os.listdir(class_dir)):
            if not fname.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(class_dir, fname)
            try:
                with Image.open(path) as im:
                    img = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8, grey made RGB
            except (OSError, UnidentifiedImageError) as e:
                raise DataError(f"cannot decode image {path}: {e}") from None
            if img.shape[:2] != (32, 32):
                raise DataError(f"{path} is {img.shape[1]}x{img.shape[0]}; images must be 32x32 "
                                "(resize your folder first)")
            images.append(img)
            labels.append(label)
    if not images:
        raise DataError(f"no images found under {split_dir}: expected "
                        f"{split_dir}/<class>/*.png")
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(labels, dtype=torch.int64), tuple(classes)


def _folder_signature(root):
    """What the cache key depends on: the path and every file's name, size and mtime."""
    h = hashlib.sha1(os.path.abspath(root).encode())
    for split in ("train", "test"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, split)):
            dirnames.sort()
            for f in sorted(filenames):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnn_gan")


def load_folder(root, cache_dir=None, name="folder"):
    """An image folder with train/<class>/ and test/<class>/, decoded once and cached as .npz."""
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"{root} has no {split}/ folder: --data_dir must hold "
                            "train/<class>/*.png and test/<class>/*.png")
    cache_dir = cache_dir or default_cache_dir()
    cache = os.path.join(cache_dir, f"folder-{_folder_signature(root)}.npz")
    if os.path.exists(cache):
        try:
            with np.load(cache) as z:
                arrays = {k: torch.from_numpy(z[k].copy()) for k in
                          ("train_x", "train_y", "test_x", "test_y")}
                classes = tuple(str(c) for c in z["classes"])
            return ImageData(name, classes=classes, flip=True, **arrays)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    print(f"decoding {root} (once; cached in {cache_dir})", file=sys.stderr)
    train_x, train_y, classes = _decode_folder(os.path.join(root, "train"))
    test_x, test_y, _ = _decode_folder(os.path.join(root, "test"), classes)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp.npz"
        np.savez(tmp, train_x=train_x.numpy(), train_y=train_y.numpy(), test_x=test_x.numpy(),
                 test_y=test_y.numpy(), classes=np.array(classes))
        os.replace(tmp, cache)
    except OSError as e:  # a read-only home is no reason to stop
        print(f"warning: could not write the cache {cache}: {e}", file=sys.stderr)
    return ImageData(name, train_x, train_y, test_x, test_y, classes, flip=True)


def load_cifar10(data_dir, cache_dir=None):
    """CIFAR-10 from torchvision's files in data_dir (downloaded when missing) or a PNG folder."""
    for root in (data_dir, os.path.join(data_dir, "cifar10")):
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
            data = load_folder(root, cache_dir, name="cifar10")
            if data.classes != CIFAR10_CLASSES:
                raise DataError(f"{root} holds classes {list(data.classes)}, not CIFAR-10's; "
                                "use --dataset folder for other image folders")
            return data
    import torchvision

    present = os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py"))
    try:
        # torchvision prints download progress on stdout, which is kept for the final JSON line
        with contextlib.redirect_stdout(sys.stderr):
            sets = [torchvision.datasets.CIFAR10(data_dir, train=t, download=not present)
                    for t in (True, False)]
    except Exception as e:  # URLError, OSError, RuntimeError: all mean "no usable copy here"
        raise DataError(
            f"CIFAR-10 is not in {data_dir} and could not be downloaded ({type(e).__name__}: "
            f"{e}). Point --data_dir at a folder holding cifar-10-batches-py or a PNG copy "
            "(train/<class>/*.png, test/<class>/*.png)") from None
    (tx, ty), (vx, vy) = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(),
                           torch.tensor(s.targets, dtype=torch.int64)) for s in sets]
    return ImageData("cifar10", tx, ty, vx, vy, CIFAR10_CLASSES, flip=True)


def load_digits(data_dir=None, cache_dir=None):
    """scikit-learn's 1,797 8x8 digits (values 0..16), upsampled to 32x32 RGB uint8.

    A fixed split (seeded permutation): 1,500 train, 297 test images.
    """
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1500], perm[1500:]
    return ImageData("digits", x[tr], y[tr], x[te], y[te], tuple(str(i) for i in range(10)),
                     flip=False)


def _torchvision(dataset, data_dir, what, **kw):
    """A torchvision dataset, downloaded into data_dir when missing (progress on stderr:
    stdout is kept for the final JSON line); offline and absent: a DataError."""
    import torchvision

    try:
        with contextlib.redirect_stdout(sys.stderr):
            return getattr(torchvision.datasets, dataset)(data_dir, download=True, **kw)
    except Exception as e:  # URLError, OSError, RuntimeError: all mean "no usable copy here"
        raise DataError(f"{what} is not in {data_dir} and could not be downloaded "
                        f"({type(e).__name__}: {e}). Point --data_dir at the folder holding "
                        f"{what}") from None


def _load_mnist_like(dataset, data_dir, classes, flip):
    """MNIST or FashionMNIST in torchvision's layout: uint8 (N, 1, 28, 28)."""
    sets = [_torchvision(dataset, data_dir, f"{dataset}/raw", train=t) for t in (True, False)]
    (tx, ty), (vx, vy) = [(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in sets]
    name = "mnist" if dataset == "MNIST" else "fashion_mnist"
    return ImageData(name, tx, ty, vx, vy, classes, flip=flip)


def load_mnist(data_dir, cache_dir=None):
    return _load_mnist_like("MNIST", data_dir, tuple(str(i) for i in range(10)), flip=False)


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle-boot")


def load_fashion_mnist(data_dir, cache_dir=None):
    return _load_mnist_like("FashionMNIST", data_dir, FASHION_CLASSES, flip=True)


def load_svhn(data_dir, cache_dir=None):
    """SVHN's train_32x32.mat and test_32x32.mat (downloaded when missing), read directly:
    X is (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0."""
    import scipy.io

    out = []
    for split in ("train", "test"):
        path = os.path.join(data_dir, f"{split}_32x32.mat")
        if not os.path.exists(path):
            _torchvision("SVHN", data_dir, f"{split}_32x32.mat", split=split)
        try:
            mat = scipy.io.loadmat(path)
            x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))
            y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1))
        except (OSError, ValueError, KeyError, TypeError, scipy.io.matlab.MatReadError) as e:
            raise DataError(f"{path} is not an SVHN file ({type(e).__name__}: {e})") from None
        if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or len(x) != len(y) \
                or not ((y >= 1) & (y <= 10)).all():
            raise DataError(f"{path} is not an SVHN file: X must be 32x32x3xN uint8 and y the "
                            "N labels 1..10")
        out += [x, torch.where(y == 10, 0, y)]  # the label 10 marks the digit 0
    return ImageData("svhn", *out, tuple(str(i) for i in range(10)), flip=False)


DATASETS = {
    "cifar10": load_cifar10,
    "folder": load_folder,
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "svhn": load_svhn,
}


def load_dataset(name, data_dir, cache_dir=None, subset=None, seed=0):
    """Load a dataset by name; subset keeps N training images chosen by a seeded permutation."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")
    if name == "folder":
        if not os.path.isdir(data_dir):
            raise DataError(f"data directory {data_dir} does not exist")
        if not os.listdir(data_dir):
            raise DataError(f"data directory {data_dir} is empty")
    data = DATASETS[name](data_dir, cache_dir)
    if subset is not None:
        if subset > len(data.train_y):
            raise DataError(f"--subset {subset} is larger than the {len(data.train_y)} training "
                            f"images of {name}")
        keep = torch.randperm(len(data.train_y), generator=make_generator("cpu", seed, "subset"))
        keep = keep[:subset].sort().values
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    return data


# ----------------------------------------------------------------------------- augmentation

def to_float(x_uint8):
    """uint8 images in [0, 255] -> float in [-1, 1], as ToTensor + Normalize(0.5, 0.5)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def jitter_strengths(seed, choice="assignment"):
    """ColorJitter strengths (brightness, contrast, saturation, hue), drawn once per run.

    The assignment passes 0.1*randn(1) for each. Its torchvision (0.2) applied a jitter only
    when its strength was greater than 0, so a negative draw turned that jitter off: each of
    the four is on in a run with probability 1/2, with strength |0.1 N(0, 1)| when on. The
    same here: a negative draw becomes 0, which is "off" for Augment and for torchvision.
    choice 'off' or 'B,C,S,H' (the --color_jitter flag) sets them instead.
    """
    if choice == "off":
        return 0.0, 0.0, 0.0, 0.0
    if choice != "assignment":
        return tuple(float(v) for v in choice.split(","))
    g = make_generator("cpu", seed, "color_jitter")
    b, c, s, h = (0.1 * torch.randn(4, generator=g)).clamp(min=0).tolist()
    return b, c, s, min(h, 0.5)


@dataclass
class AugmentParams:
    """Per-sample parameters of one batch: crop boxes, jitter factors and order, flips."""
    top: torch.Tensor      # (B,) int64
    left: torch.Tensor     # (B,) int64
    size: torch.Tensor     # (B,) int64, side of the square crop
    factors: torch.Tensor  # (B, 4) brightness, contrast, saturation multipliers, hue shift
    order: torch.Tensor    # (B, 4) a permutation of the four jitter operations
    flip: torch.Tensor     # (B,) bool


class Augment:
    """The assignment's training transforms on a batch, each sample with its own draw.

    RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(1, 1)) -> ColorJitter(b, c, s, h) ->
    RandomHorizontalFlip() with the same distributions as torchvision's, applied to float
    images in [0, 1] of shape (B, C, H, W) on any device. crop=False leaves the crop out.
    """

    def __init__(self, strengths, flip=True, scale=(0.7, 1.0), size=32, crop=True):
        self.strengths, self.use_flip, self.scale, self.size = strengths, flip, scale, size
        self.crop = crop

    def sample(self, n, generator, height=32, width=32):
        dev = generator.device
        u = lambda *shape: torch.rand(*shape, generator=generator, device=dev)  # noqa: E731
        area = u(n) * (self.scale[1] - self.scale[0]) + self.scale[0]
        # ratio 1: a square of side round(sqrt(area * H * W)); torchvision's first try always fits
        side = torch.sqrt(area * height * width).round().long().clamp(1, min(height, width))
        top = (u(n) * (height - side + 1)).floor().long()
        left = (u(n) * (width - side + 1)).floor().long()
        b, c, s, h = self.strengths
        lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], device=dev)
        hi = torch.tensor([1 + b, 1 + c, 1 + s, h], device=dev)
        factors = lo + u(n, 4) * (hi - lo)
        order = u(n, 4).argsort(dim=1)
        flip = (u(n) < 0.5) if self.use_flip else torch.zeros(n, dtype=torch.bool, device=dev)
        return AugmentParams(top, left, side, factors, order, flip)

    def apply(self, x, p):
        if self.crop:
            x = resized_crop(x, p.top, p.left, p.size, self.size)
        x = color_jitter(x, p.factors, p.order, active=[s > 0 for s in self.strengths])
        return torch.where(p.flip[:, None, None, None], x.flip(3), x)

    def __call__(self, x, generator):
        return self.apply(x, self.sample(x.shape[0], generator, x.shape[2], x.shape[3]))


def _source_index(out_size, crop, crop_start):
    """Bilinear sampling positions (align_corners=False) of out_size pixels in each crop."""
    pos = (torch.arange(out_size, device=crop.device) + 0.5) * (crop[:, None] / out_size) - 0.5
    pos = pos.clamp(min=0)  # (B, out)
    i0 = pos.floor().long()
    i1 = torch.minimum(i0 + 1, crop[:, None] - 1)
    w1 = pos - i0
    return i0 + crop_start[:, None], i1 + crop_start[:, None], w1


def resized_crop(x, top, left, side, out_size):
    """Crop a square (top, left, side) from each image and resize it bilinearly to out_size.

    Equals torch.nn.functional.interpolate(bilinear, align_corners=False) of each crop.
    x: (B, C, H, W) float -> (B, C, out_size, out_size).
    """
    B, C, H, W = x.shape
    c0, c1, wc = _source_index(out_size, side, left)  # (B, out)
    r0, r1, wr = _source_index(out_size, side, top)
    idx = lambda i: i[:, None, None, :].expand(B, C, H, out_size)  # noqa: E731
    cols = torch.gather(x, 3, idx(c0)) * (1 - wc[:, None, None, :]) \
        + torch.gather(x, 3, idx(c1)) * wc[:, None, None, :]  # (B, C, H, out)
    idx = lambda i: i[:, None, :, None].expand(B, C, out_size, out_size)  # noqa: E731
    return torch.gather(cols, 2, idx(r0)) * (1 - wr[:, None, :, None]) \
        + torch.gather(cols, 2, idx(r1)) * wr[:, None, :, None]  # (B, C, out, out)


def _gray(x):
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # (B, 1, H, W)


def _blend(x, other, f):
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_hue(x, shift):
    """Rotate the hue of each image by shift[b] (fraction of a turn), as torchvision does."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)),
                    torch.zeros_like(maxc))
    h = (h + shift[:, None, None]) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # For each sextant i, which of (v, q, p, t) makes r, g and b.
    choices = torch.stack([v, q, p, t])  # (4, B, H, W)
    table = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]],
                         device=x.device)
    pick = table[i]  # (B, H, W, 3)
    out = torch.gather(choices, 0, pick.permute(3, 0, 1, 2))  # (3, B, H, W)
    return out.permute(1, 0, 2, 3).clamp(0, 1)


def color_jitter(x, factors, order, active=(True, True, True, True)):
    """Brightness, contrast, saturation and hue, in a per-sample random order.

    x: (B, C, H, W) in [0, 1]; factors: (B, 4); order: (B, 4) permutations of 0..3. An
    operation that is not active (its strength is 0) is skipped, as torchvision skips it;
    saturation and hue leave a grey image (C = 1) alone, as torchvision's do.
    """
    if x.shape[1] == 1:
        active = (active[0], active[1], False, False)
    f = factors[:, :, None, None, None]  # (B, 4, 1, 1, 1)
    ops = (
        lambda x: _blend(x, torch.zeros_like(x), f[:, 0]),
        lambda x: _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f[:, 1]),
        lambda x: _blend(x, _gray(x), f[:, 2]),
        lambda x: adjust_hue(x, factors[:, 3]),
    )
    ops = [op for op, on in zip(ops, active) if on]
    keys = [k for k, on in enumerate(active) if on]
    for stage in range(4):
        which = order[:, stage][:, None, None, None]
        out = x
        for k, op in zip(keys, ops):
            out = torch.where(which == k, op(x), out)
        x = out
    return x


# ----------------------------------------------------------------------------- batching

class Batches:
    """Batches of a uint8 dataset as float tensors in [-1, 1] on a device.

    epoch(e, start) yields (x, y) for batch indices start.. of epoch e; the shuffle and the
    augmentation of every batch depend only on (seed, e, batch index, rank). Under several
    processes, each rank takes every world_size-th image of the shuffled order.
    """

    def __init__(self, images, labels, batch_size, device="cpu", *, seed=0, shuffle=False,
                 drop_last=False, augment=None, rank=0, world_size=1, on_device=False,
                 memory_format=torch.contiguous_format):
        self.device = torch.device(device)
        # On the GPU fast path the whole uint8 dataset lives on the device (CIFAR-10: 150 MB),
        # so a batch is an index into it, with no host-to-device copy in the step loop.
        where = self.device if on_device else "cpu"
        self.images, self.labels = images.to(where), labels.to(where)
        self.batch_size, self.seed = batch_size, seed
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.rank, self.world_size = rank, world_size
        self.memory_format = memory_format
        self.per_rank = len(labels) // world_size  # equal shares: ranks step in lockstep

    def __len__(self):
        n, b = self.per_rank, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

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
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.augment is None:
                x = to_float(x)
            else:  # the transforms work in [0, 1], as torchvision's do before Normalize
                g = make_generator(self.device, self.seed, "augment", epoch, i, self.rank)
                x = self.augment(x.float().div_(255), g).mul_(2).sub_(1)
            yield x.contiguous(memory_format=self.memory_format), y
