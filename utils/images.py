"""Image files read faithfully (8- or 16-bit grey or colour as uint8, 16 bits scaled, not
clipped) or refused in one line naming the file: other modes, files that are not regular,
empty, truncated, or decompression bombs. Image folders (DIR/train/<class>/*.png and
DIR/test/<class>/*.png) are read by the layout rules in docs/data.md.
"""
import os
import stat
import warnings

import numpy as np

from utils.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
EIGHT_BIT = {"1": "L", "L": "L", "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGB": "RGB",
             "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def shown(path):
    """A path as it can be printed, whatever bytes its name holds."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")  # b"\xff" shown as \xff


def _check_name(path):
    try:
        os.path.basename(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{shown(path)}: the name is not valid UTF-8; rename it") from None


def to_uint8(im, path):
    """A Pillow image as uint8 (H, W, C), C = 1 for grey, 3 for colour (alpha dropped)."""
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{shown(path)}: {im.mode} pixel values outside 0..65535")
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # 16 -> 8 bits
        return a[..., None]
    if im.mode not in EIGHT_BIT:
        raise DataError(f"{shown(path)}: image mode {im.mode} is not supported (grey, palette "
                        "or colour images of 8 or 16 bits are)")
    a = np.asarray(im.convert(EIGHT_BIT[im.mode]))
    return a[..., None] if a.ndim == 2 else a


def read_image(path, size=None, channels=None):
    """An image file as uint8 (H, W, C). size: the side every image must have (checked before
    decoding); channels: 3 repeats a grey image to RGB, 1 averages colour to grey (Pillow's
    luminance), None keeps the file's."""
    from PIL import Image, UnidentifiedImageError

    _check_name(path)
    try:
        st = os.stat(path)  # follows links: a broken or looping one fails here
    except OSError as e:
        raise DataError(f"cannot read {shown(path)}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{shown(path)} is not a regular file (a FIFO, device or folder named "
                        "like an image)")
    if st.st_size == 0:
        raise DataError(f"{shown(path)} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if size is not None and im.size != (size, size):
                    raise DataError(f"{shown(path)} is {im.size[0]}x{im.size[1]}; images must "
                                    f"be {size}x{size} (resize the folder first)")
                if channels in (1, 3) and im.mode in EIGHT_BIT:
                    im = im.convert("RGB" if channels == 3 else "L")
                a = to_uint8(im, path)  # refuses the modes it cannot read faithfully
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"cannot decode image {shown(path)} ({type(e).__name__}: {e})") from None
    if channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def _entries(folder):
    """(name, path) of a folder's entries, sorted by name, hidden ones (.name) left out."""
    for name in sorted(n for n in os.listdir(folder) if not n.startswith(".")):
        path = os.path.join(folder, name)
        _check_name(path)
        yield name, path


def class_folders(split_dir):
    """The class folders of train/ (sorted by name); a file standing there is an error."""
    classes = []
    for name, path in _entries(split_dir):
        if os.path.isdir(path):
            classes.append(name)
        elif name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{shown(path)} lies directly in {shown(split_dir)}: images belong "
                            "in a folder per class")
    if not classes:
        raise DataError(f"no class folders in {shown(split_dir)}: expected "
                        f"{shown(split_dir)}/<class>/*.png")
    return classes


def image_files(class_dir):
    """The image files of a class folder (sorted by name), by the layout's rules."""
    files = []
    for name, path in _entries(class_dir):
        if os.path.isdir(path):
            raise DataError(f"{shown(path)} is a folder inside a class folder: images must lie "
                            "directly in <split>/<class>/ (move them up, or remove it)")
        if name.lower().endswith(IMAGE_EXTENSIONS):
            files.append(path)
    if not files:
        raise DataError(f"the class folder {shown(class_dir)} holds no images")
    return files


def decode_split(split_dir, classes=None, size=32):
    """DIR/<class>/* as uint8 images (N, size, size, 3) and labels; the classes are train/'s
    folders, or for test/ those given, which test/ must hold exactly."""
    found = class_folders(split_dir)
    if classes is not None and found != list(classes):
        missing = sorted(set(classes) - set(found))
        extra = sorted(set(found) - set(classes))
        raise DataError(f"{shown(split_dir)} must hold the same class folders as train/: "
                        + "; ".join(filter(None, [f"missing {missing}" if missing else "",
                                                  f"not in train/: {extra}" if extra else ""])))
    from utils.console import progress

    files = [(label, path) for label, name in enumerate(found)
             for path in image_files(os.path.join(split_dir, name))]
    images = [read_image(path, size=size, channels=3) for _, path in
              progress(files, len(files), f"decoding {os.path.basename(split_dir)}/")]
    labels = np.array([label for label, _ in files], dtype=np.int64)
    return np.stack(images), labels, tuple(found)
