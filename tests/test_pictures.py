"""Image grids, and training curves that leave out what never moved."""
import torch

from utils.pictures import save_grid


def test_save_grid_lays_out_nrow_columns_row_major(tmp_path):
    """20 images in 10 columns: 2 rows, two-pixel white gaps, each pixel drawn 2 x 2; image
    i sits in row i // 10, column i % 10."""
    import numpy as np
    from PIL import Image

    path = str(tmp_path / "g.png")
    shades = torch.linspace(0, 0.9, 20)[:, None, None, None].expand(20, 3, 32, 32)
    save_grid(shades, path, nrow=10)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (2 * (2 * 34 + 2), 2 * (10 * 34 + 2), 3)  # (140, 684, 3)
    for i in range(20):
        row, col = divmod(i, 10)
        y, x = 2 * (2 + row * 34 + 16), 2 * (2 + col * 34 + 16)  # the image's centre
        assert abs(int(img[y, x, 0]) - round(float(shades[i, 0, 0, 0]) * 255)) <= 1, i
    assert (img[:4, :, :] == 255).all()  # the gap above the first row is white


def test_curves_leave_out_a_figure_that_never_left_zero():
    from utils.pictures import curves_figure

    records = [dict(epoch=e, d_loss=1.0 / e, gp=0.0, w_dist="damaged") for e in (1, 2, 3)]
    fig = curves_figure(records, [("losses", ["d_loss"]), ("penalty", ["gp"]),
                                  ("distance", ["w_dist"])], "t")
    assert [ax.get_title() for ax in fig.axes if ax.lines] == ["losses"]
