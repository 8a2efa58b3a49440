"""Image files read faithfully or refused by name (utils/images.py): a FIFO, a broken or
looping link, an empty, truncated or bomb-sized file, a mode that is not an image's, names
that are not UTF-8, 16-bit PNGs scaled rather than clipped, and an image folder laid out
wrong: one line each, in training and in metrics.py, never a traceback or a hang."""
import contextlib
import os
import shutil
import signal
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import last_line, make_folder, train
from PIL import Image

from utils.data import load_folder
from utils.errors import UserError
from utils.images import read_image
from utils.quality import read_folder


def png_bytes(a, bit_depth=8, size=None, idat=None):
    """A PNG file's bytes for a grey (H, W) or RGB (H, W, 3) array of 8 or 16 bits; size and
    idat override the header's size and the pixel data (a decompression bomb)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    h, w = a.shape[:2]
    header = struct.pack(">IIBBBBB", *(size or (w, h)), bit_depth, 0 if a.ndim == 2 else 2,
                         0, 0, 0)
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in a)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
            chunk(b"IDAT", zlib.compress(raw) if idat is None else idat) + chunk(b"IEND", b""))


@contextlib.contextmanager
def no_hang(seconds=60):
    def fail(*a):
        raise TimeoutError("hung")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- bad images

def _fifo(path):
    os.mkfifo(path)


def _broken_link(path):
    os.symlink(path + ".gone", path)


def _looping_link(path):
    os.symlink(os.path.basename(path), path)


def _empty(path):
    open(path, "wb").close()


def _truncated(path):
    with open(path, "wb") as f:
        f.write(png_bytes(np.zeros((32, 32, 3), np.uint8))[:60])


def _bomb(path):
    with open(path, "wb") as f:  # 20,000 x 20,000 pixels claimed, a few bytes of data
        f.write(png_bytes(np.zeros((1, 1), np.uint8), size=(20000, 20000),
                          idat=zlib.compress(b"\0\0")))


def _float_mode(path):
    Image.fromarray(np.zeros((32, 32), np.float32), mode="F").save(path[:-4] + ".tif")
    os.replace(path[:-4] + ".tif", path)


BAD_IMAGES = {  # how the file is broken: what the one line says
    "fifo": (_fifo, "not a regular file"),
    "broken link": (_broken_link, "cannot read"),
    "looping link": (_looping_link, "cannot read"),
    "zero bytes": (_empty, "is empty"),
    "truncated": (_truncated, "cannot decode"),
    "decompression bomb": (_bomb, "cannot decode"),
    "float image": (_float_mode, "not supported"),
}


@pytest.mark.parametrize("fault", list(BAD_IMAGES))
def test_a_bad_image_file_is_one_line_in_training_and_in_metrics(fault, folder, tmp_path, capsys):
    make, said = BAD_IMAGES[fault]
    path = os.path.join(folder, "train", "b", "3.png")
    os.remove(path)
    make(path)
    with no_hang():
        code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert said in last_line(code, err), err
    assert not os.path.exists(tmp_path / "run")  # nothing written, the folder it made removed
    with no_hang(), pytest.raises(UserError, match=said):
        read_folder(os.path.join(folder, "train", "b"))


def test_names_that_are_not_utf8_are_refused_by_name(folder, tmp_path, capsys):
    bad = os.path.join(folder, "train", "a").encode() + b"/\xff\xfe.png"
    shutil.copy(os.path.join(folder, "train", "a", "0.png"), bad)
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert "not valid UTF-8" in last_line(code, err) and "\\xff" in err
    os.remove(bad)
    train_dir = os.path.join(folder, "train")
    os.rename(os.path.join(train_dir, "b"), train_dir.encode() + b"/b\xff")
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert "not valid UTF-8" in last_line(code, err)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    levels = np.array([0, 257, 32768, 65535], np.uint16)
    grey16 = np.tile(levels, (32, 8))  # (32, 32): four 16-bit levels
    expected = np.tile(np.array([0, 1, 128, 255], np.uint8), (32, 8))
    p = tmp_path / "g16.png"
    p.write_bytes(png_bytes(grey16, 16))
    assert Image.open(p).mode == "I;16"
    assert np.array_equal(read_image(str(p))[..., 0], expected)
    assert np.array_equal(read_image(str(p), channels=3), np.repeat(expected[..., None], 3, -1))
    rgb16 = np.stack([grey16, grey16 // 2, grey16], -1)
    p = tmp_path / "c16.png"
    p.write_bytes(png_bytes(rgb16, 16))
    assert read_image(str(p))[0, 3].tolist() == [255, 127, 255]  # the high byte of each value
    # a folder of 16-bit PNGs trains on the right pixels, and metrics.py reads them so too
    root = make_folder(tmp_path / "data")
    for split, n in (("train", 8), ("test", 4)):
        for c in ("a", "b"):
            for i in range(n):
                with open(os.path.join(root, split, c, f"{i}.png"), "wb") as f:
                    f.write(png_bytes(grey16, 16))
    d = load_folder(root, str(tmp_path / "cache"))
    assert torch.equal(d.train_x[5, 2], torch.from_numpy(expected))
    x, _ = read_folder(os.path.join(root, "train", "a"))
    assert x.shape == (8, 1, 32, 32) and torch.equal(x[0, 0], torch.from_numpy(expected))


# ----------------------------------------------------------------------------- the folder's layout

LAYOUTS = {  # how the folder is laid out wrong: what the one line says
    "empty class folder": (lambda r: os.makedirs(os.path.join(r, "train", "c")),
                           "holds no images"),
    "class only in test/": (lambda r: make_folder(os.path.join(r, "extra"), ("c",)) and
                            os.replace(os.path.join(r, "extra", "test", "c"),
                                       os.path.join(r, "test", "c")), "not in train/"),
    "class missing from test/": (lambda r: shutil.rmtree(os.path.join(r, "test", "b")),
                                 "missing ['b']"),
    "nested subfolder": (lambda r: os.makedirs(os.path.join(r, "train", "a", "more")),
                         "folder inside a class folder"),
    "image outside a class": (lambda r: shutil.copy(os.path.join(r, "train", "a", "0.png"),
                                                    os.path.join(r, "train", "x.png")),
                              "belong in a folder per class"),
}


@pytest.mark.parametrize("fault", list(LAYOUTS))
def test_the_folder_layout_is_what_the_user_meant_or_one_line(fault, folder, tmp_path, capsys):
    make, said = LAYOUTS[fault]
    make(folder)
    code, _, err = train(folder, tmp_path / "run", capsys, "--epochs", "1")
    assert said in last_line(code, err), err


def test_files_that_are_not_images_are_ignored_as_documented(folder, tmp_path):
    (tmp_path / "data" / "train" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / "train" / "a" / ".DS_Store").write_bytes(b"\0")
    assert len(load_folder(folder, str(tmp_path / "cache")).train_y) == 16
