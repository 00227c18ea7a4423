"""Rasters read window by window (data/rasters.py): TIFF windows equal the image's pixels
whatever the layout (tiles, strips, compression, grey, RGBA), sliced inference reads a raster
one window at a time with the detections of the image in memory, and the predict command takes
a TIFF with --tile_size. (A 20,000 x 20,000 TIFF's peak memory: python -m bench rasters.)"""

import json
import sys

import numpy as np
import pytest

from retinanet_jax.data import rasters, shapes
from retinanet_jax.errors import UserError

from .helpers import LOW_SCORE, require

require('tifffile', 'zarr')
import tifffile


def scene(h=300, w=500, seed=0) -> np.ndarray:
    """Shapes images tiled into one larger uint8 RGB picture."""
    tiles = [shapes.generate_example(seed + i, image_size=100)['image'] for i in range(15)]
    rows = [np.concatenate(tiles[r * 5 : r * 5 + 5], axis=1) for r in range(3)]
    return np.concatenate(rows)[:h, :w]


LAYOUTS = {
    'tiled, deflate': dict(tile=(64, 64), compression='zlib'),
    'strips, none': dict(rowsperstrip=16),
    'one strip': dict(),
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_windows_are_the_pixels_of_every_layout(tmp_path, layout):
    image = scene()
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, image, photometric='rgb', **LAYOUTS[layout])
    rng = np.random.default_rng(0)
    with rasters.open_raster(path) as raster:
        assert raster.shape == (300, 500, 3) and raster.dtype == np.uint8
        for _ in range(10):
            y0, x0 = rng.integers(0, 250), rng.integers(0, 450)
            y1, x1 = y0 + rng.integers(1, 50), x0 + rng.integers(1, 50)
            np.testing.assert_array_equal(raster[y0:y1, x0:x1], image[y0:y1, x0:x1])
    grey, rgba = tmp_path / 'grey.tif', tmp_path / 'rgba.tif'
    tifffile.imwrite(grey, image[..., 1], **LAYOUTS[layout])
    alpha = np.full((300, 500, 1), 7, np.uint8)
    tifffile.imwrite(rgba, np.concatenate([image, alpha], -1), photometric='rgb', **LAYOUTS[layout])
    with rasters.open_raster(grey) as g, rasters.open_raster(rgba) as a:
        np.testing.assert_array_equal(g[10:20, 30:45], np.repeat(image[10:20, 30:45, 1:2], 3, -1))
        np.testing.assert_array_equal(a[10:20, 30:45], image[10:20, 30:45])


def test_what_cannot_be_read_is_named(tmp_path, monkeypatch):
    deep = tmp_path / 'dem.tif'
    tifffile.imwrite(deep, np.zeros((20, 30), np.uint16))
    with pytest.raises(UserError, match=rf'{deep}: uint16 samples; .*scale the raster to uint8'):
        rasters.open_raster(deep)
    bad = tmp_path / 'bad.tif'
    bad.write_bytes(b'II*\x00garbage')
    with pytest.raises(UserError, match=rf'{bad}: not a readable TIFF'):
        rasters.open_raster(bad)
    monkeypatch.setitem(sys.modules, 'zarr', None)
    with pytest.raises(UserError, match=r'needs tifffile and zarr \(pip install tifffile zarr\)'):
        rasters.open_raster(deep)
    # the predict command stops on it, before any model work, rather than skip the file
    from retinanet_jax.commands.predict import predict_files
    from retinanet_jax.inference.tiling import TileConfig

    with pytest.raises(UserError, match=rf'{deep}: reading a TIFF window by window needs'):
        predict_files(None, [str(deep)], tmp_path / 'out', tiles=TileConfig(64))


class Spy:
    """A raster that records the windows read from it."""

    def __init__(self, raster):
        self.raster, self.shape, self.reads = raster, raster.shape, []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.raster[index]


def test_sliced_inference_reads_a_raster_one_window_at_a_time(tmp_path, smoke_run):
    """The detections of a TIFF read by windows equal those of the image in memory; every read
    is one window (at most a tile a side); the overview is the image shrunk. The predict
    command's work (predict_files) with tiles on a TIFF reads it by windows: the same
    detections as the same image saved as a PNG, and a picture (the smoke model's scores are
    low: its score threshold lowered, so that there are detections to compare). One test: one
    compiled predict step."""
    import dataclasses

    from PIL import Image

    from retinanet_jax.commands.predict import predict_files
    from retinanet_jax.inference import load_predictor, tiling

    image = scene(160, 240)
    path = tmp_path / 'scene.tif'
    tifffile.imwrite(path, image, photometric='rgb', tile=(64, 64), compression='zlib')
    predictor = load_predictor(smoke_run[0])
    post = dataclasses.replace(predictor.postprocess, score_threshold=LOW_SCORE)
    predictor = dataclasses.replace(predictor, postprocess=post)
    tiles = tiling.TileConfig(size=64, overlap=0.25)  # 3 x 5 windows, batches of 8
    (want,) = tiling.predict_tiled(predictor, [image], tiles)
    with rasters.open_raster(path) as raster:
        spy = Spy(raster)
        (got,) = tiling.predict_tiled(predictor, [spy], tiles)
        picture, factor = rasters.overview(raster, 100, band=64)
    assert len(spy.reads) == len(tiling.tile_windows((160, 240), 64, 0.25)) == 15
    assert all(r.stop - r.start <= 64 and c.stop - c.start <= 64 for r, c in spy.reads)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert picture.shape == (67, 100, 3) and factor == 100 / 240
    from retinanet_jax.data.transforms import resize_image

    assert np.abs(picture.astype(int) - resize_image(image, (67, 100))).mean() < 3

    image = scene(128, 192)
    (tmp_path / 'in').mkdir()
    (tmp_path / 'png').mkdir()
    tifffile.imwrite(tmp_path / 'in' / 'site.tif', image, photometric='rgb', tile=(64, 64))
    Image.fromarray(image).save(tmp_path / 'png' / 'site.png')
    found = {}
    for kind in ('in', 'png'):
        out = tmp_path / f'{kind}-out'
        predict_files(predictor, [str(tmp_path / kind)], out, tiles=tiles)
        found[kind] = json.loads((out / 'detections.json').read_text())
        assert Image.open(out / 'site.png').size == (192, 128)
    assert len(found['in']) > 10
    assert found['in'] == [{**d, 'file_name': 'site.tif'} for d in found['png']]
