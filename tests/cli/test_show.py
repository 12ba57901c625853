"""``slipstream show``: one batch of a preset drawn as a PNG grid, checked pixel by pixel
against the same batch recomputed through the loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from slipstream import SlipstreamDataset, SlipstreamLoader
from slipstream import pipelines as P
from slipstream.cli import main as cli_main
from slipstream.sample_data import make_image_folder
from slipstream.show import HEADER, PAD, UnknownPipelineError, render_grid, show_pipeline

VIEWS = {
    "supervised_train": ["image"],
    "supervised_val": ["image"],
    "simclr": ["view_0", "view_1"],
    "ipcl": [f"crop_{i}" for i in range(5)],
    "lejepa": ["global_0", "global_1", *(f"local_{i}" for i in range(4))],
    "multicrop": ["global_0", "global_1", *(f"local_{i}" for i in range(6))],
}
CELL_GREY = (96, 96, 96)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("show")
    root = make_image_folder(tmp / "data", num_classes=2, images_per_class=4, size=(96, 128))
    return SlipstreamDataset(root, cache_dir=tmp / "cache").build_cache(progress=False)


def loader_batch(cache, name: str, batch: int, seed: int) -> dict:
    """What the CLI should have drawn, recomputed independently of slipstream.show."""
    pipes = getattr(P, name)(dtype=torch.uint8, normalize=False)
    it = iter(SlipstreamLoader(cache, batch_size=batch, shuffle=True, seed=seed,
                               pipelines=pipes, progress=False))
    try:
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in next(it).items()}
    finally:
        it.close()


def cell(grid: np.ndarray, r: int, c: int, cell_h: int, cell_w: int) -> np.ndarray:
    y = HEADER + PAD + r * (cell_h + PAD)
    x = PAD + c * (cell_w + PAD)
    return grid[y:y + cell_h, x:x + cell_w]


@pytest.mark.parametrize("name", list(VIEWS))
def test_grid_matches_the_batch(cache, tmp_path, capsys, name):
    out = tmp_path / "grid.png"
    assert cli_main(["show", str(cache.path), "--pipeline", name, "--out", str(out),
                     "--batch", "3", "--seed", "7"]) == 0
    assert str(out) in capsys.readouterr().out
    grid = np.asarray(Image.open(out).convert("RGB"))

    batch = loader_batch(cache, name, 3, 7)
    names = VIEWS[name]
    assert [k for k in batch if k not in ("label", "path")] == names
    cell_h = max(batch[n].shape[2] for n in names)
    cell_w = max(batch[n].shape[3] for n in names)
    assert grid.shape == (HEADER + PAD + 3 * (cell_h + PAD), PAD + len(names) * (cell_w + PAD), 3)
    for c, n in enumerate(names):
        h, w = batch[n].shape[2:]
        top, left = (cell_h - h) // 2, (cell_w - w) // 2
        for r in range(3):
            got = cell(grid, r, c, cell_h, cell_w)
            want = batch[n][r].permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(got[top:top + h, left:left + w], want,
                                          err_msg=f"{name} row {r} view {n}")
            # a smaller view sits on a plain grey cell: its margin shows the size difference
            margin = got.copy()
            margin[top:top + h, left:left + w] = CELL_GREY
            assert (margin == CELL_GREY).all()
        # the view's name is written above its column
        band = grid[:HEADER, PAD + c * (cell_w + PAD):PAD + c * (cell_w + PAD) + cell_w]
        assert (band.max(axis=2) > 150).any(), f"no header text over {n}"


def test_size_scales_all_views_alike(cache, tmp_path):
    out = tmp_path / "small.png"
    assert cli_main(["show", str(cache.path), "--pipeline", "lejepa", "--out", str(out),
                     "--batch", "2", "--size", "112"]) == 0
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape == (HEADER + PAD + 2 * (112 + PAD), PAD + 6 * (112 + PAD), 3)
    batch = loader_batch(cache, "lejepa", 2, 0)
    local = 49  # 98 * 112 / 224: a local crop stays less than half a global one
    off = (112 - local) // 2
    for r in range(2):
        for c, n in enumerate(VIEWS["lejepa"]):
            got = cell(grid, r, c, 112, 112).astype(np.float64)
            if c >= 2:  # a local view: grey margin, the scaled view in the middle
                assert (got[:off] == CELL_GREY).all() and (got[off + local:] == CELL_GREY).all()
                got = got[off:off + local, off:off + local]
            want = torch.nn.functional.interpolate(
                batch[n][r:r + 1].double(), size=got.shape[:2], mode="area")[0]
            assert np.abs(got - want.permute(1, 2, 0).numpy()).mean() < 6, (r, n)


def test_unknown_pipeline_lists_the_presets(cache, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert cli_main(["show", str(cache.path), "--pipeline", "simclrr", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slipstream show: error: unknown pipeline 'simclrr'")
    for name in VIEWS:
        assert name in err
    assert not out.exists()
    with pytest.raises(UnknownPipelineError, match="choose one of supervised_train") as exc:
        show_pipeline(cache, "dino", tmp_path / "y.png")
    assert isinstance(exc.value, ValueError)


def test_missing_cache_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["show", "nosuchkey", "--pipeline", "simclr", "--out",
                     str(tmp_path / "x.png"), "--cache-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("slipstream show: error:")


def test_render_grid_refuses_normalised_views():
    views = {"a": torch.randn(2, 3, 8, 8) * 2}
    with pytest.raises(ValueError, match="normalize=False"):
        render_grid(views, ["a"])
    ok = {"a": torch.rand(2, 3, 8, 8), "b": torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)}
    img = render_grid(ok, ["a", "b"], rows=1)
    assert img.size == (PAD + 2 * (8 + PAD), HEADER + PAD + (8 + PAD))
