"""Image grids."""
import torch

from utils.pictures import save_grid


def test_save_grid_writes_a_png(tmp_path):
    path = str(tmp_path / "g.png")
    save_grid(torch.rand(20, 3, 32, 32), path, nrow=10)
    from PIL import Image

    w, h = Image.open(path).size
    assert w > 1.8 * h  # 10 columns, 2 rows

