"""Rasters larger than memory, read window by window (sliced inference on a 20,000-pixel
aerial or slide image: inference/tiling.py reads one batch of windows at a time).

  raster = open_raster('scene.tif')   # .shape (H, W, 3), .dtype uint8
  window = raster[y0:y1, x0:x1]       # uint8 [y1 - y0, x1 - x0, 3] RGB, only its chunks read

TIFF (.tif, .tiff; tiled or striped, any codec tifffile decodes) is read through tifffile's
Zarr store (`TiffPage.aszarr`), so a window decodes only the tiles or strips it touches; both
packages are optional (`pip install tifffile zarr`), and a clear line says so where they are
missing. Pixels: uint8, grayscale (H, W) or (H, W, 1) repeated to RGB, RGB, or RGBA with the
alpha dropped (the first series, full resolution). Other sample types (uint16, float: a
multispectral or elevation raster) are refused with their type: scale them to 8 bits first.
`is_raster(path)` says whether a path is read this way; other images are read whole
(data/images.py).
"""

from pathlib import Path

import numpy as np

from retinanet_jax.errors import UserError

SUFFIXES = ('.tif', '.tiff')


def is_raster(path) -> bool:
    """Whether `path` is read window by window (a TIFF), not whole."""
    return Path(path).suffix.lower() in SUFFIXES


def require(path) -> None:
    """UserError, naming `path` and what to install, where tifffile or zarr is missing."""
    try:
        import tifffile  # noqa: F401
        import zarr  # noqa: F401
    except ImportError as e:
        raise UserError(
            f'{path}: reading a TIFF window by window needs tifffile and zarr '
            f'(pip install tifffile zarr): {e}'
        ) from None


def open_raster(path) -> 'TiffRaster':
    """The raster at `path` (see the module docstring); UserError naming the file where it
    cannot be read this way."""
    return TiffRaster(path)


class TiffRaster:
    """A TIFF's first image as a lazily read uint8 [H, W, 3] array: `shape`, `dtype` and
    numpy-style slicing of rows and columns (`raster[y0:y1, x0:x1]`)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, path):
        self.path = Path(path)
        require(path)
        import tifffile
        import zarr

        try:
            self._file = tifffile.TiffFile(self.path)
            series = self._file.series[0]
            self._array = zarr.open_array(series.aszarr(level=0), mode='r')
        except Exception as e:  # tifffile raises many kinds; one line names the file
            raise UserError(f'{path}: not a readable TIFF ({type(e).__name__}: {e})') from None
        axes, shape = series.axes, tuple(self._array.shape)
        if self._array.dtype != np.uint8:
            raise UserError(
                f'{path}: {self._array.dtype} samples; sliced inference reads 8-bit images '
                '(scale the raster to uint8 first)'
            )
        if axes == 'YX':
            self._bands = None
        elif axes == 'YXS' and shape[2] in (1, 3, 4):
            self._bands = shape[2]
        else:
            raise UserError(
                f'{path}: axes {axes} of shape {shape}; sliced inference reads a grayscale, '
                'RGB or RGBA image (axes YX or YXS)'
            )
        self.shape = (*shape[:2], 3)

    def __getitem__(self, index) -> np.ndarray:
        rows, cols = index
        window = np.asarray(self._array[rows, cols])
        if self._bands is None or self._bands == 1:
            return np.repeat(window.reshape(*window.shape[:2], 1), 3, axis=-1)
        return np.ascontiguousarray(window[..., :3])

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def overview(raster, max_side: int, band: int = 1024) -> tuple[np.ndarray, float]:
    """(uint8 [h, w, 3] the raster shrunk so its long side is at most `max_side`, the scale
    factor): about `band` rows read at a time, each band shrunk on its own (PIL's antialiased
    bilinear, data/transforms.py), so memory holds one band and the overview."""
    from retinanet_jax.data.transforms import resize_image

    h, w = raster.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    out_h, out_w = max(1, round(h * factor)), max(1, round(w * factor))
    step = max(1, round(band * factor))  # output rows per band; their source rows follow
    rows = []
    for top in range(0, out_h, step):
        bottom = min(out_h, top + step)
        y0, y1 = round(top * h / out_h), round(bottom * h / out_h)
        rows.append(resize_image(np.asarray(raster[y0:y1, 0:w]), (bottom - top, out_w)))
    return np.concatenate(rows), factor
