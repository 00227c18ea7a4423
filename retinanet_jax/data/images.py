"""Image files -> uint8 RGB arrays, for what photo folders really hold.

  read_image(path, exif='ignore') -> uint8 [H, W, 3] RGB
  image_size(path, exif='ignore') -> (height, width), from the header only

Every file kind is decoded to 8-bit RGB the way a person viewing it would expect:
  8-bit RGB / grayscale (L) / palette (P) / RGBA / LA     converted by PIL; alpha is dropped
                                                          (composited on black, as PIL does)
  16-bit and 32-bit grayscale PNGs (I;16, I)              scaled to 0..255 (value / 257 for
                                                          16-bit), not clipped at 255
  CMYK JPEGs                                              converted with PIL's (Adobe-inverted
                                                          aware) CMYK -> RGB
EXIF orientation: `exif='ignore'` (default) keeps the pixels as stored, the convention of COCO's
annotations (their boxes refer to the stored pixels) and of torchvision's decode_jpeg;
`exif='apply'` rotates / mirrors them upright as PIL's ImageOps.exif_transpose does (what a
photo viewer shows, the convention of the predict command). Zero-byte, truncated and
undecodable files raise ValueError naming the file.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retinanet_jax.errors import UserError

EXIF_MODES = ('ignore', 'apply')
# The suffixes of the image files that dataset folders hold (what PIL decodes).
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
_ORIENTATION = 0x0112  # the EXIF tag
_SWAPS_AXES = (5, 6, 7, 8)  # orientations that transpose the image


def read_image(path: str | Path, exif: str = 'ignore') -> np.ndarray:
    """The image file at `path` as uint8 [H, W, 3] RGB (see the module docstring)."""
    _check_exif(exif)
    try:
        with Image.open(path) as f:
            f.load()  # decodes now: a truncated file fails here, with its name
            image = ImageOps.exif_transpose(f) if exif == 'apply' else f
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path}: not a readable image ({type(e).__name__}: {e})') from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> uint8 [H, W, 3] RGB."""
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):  # 16-bit grayscale
        values = np.asarray(image, np.uint16).astype(np.float32) / 257.0
        return np.repeat(np.round(values).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode in ('I', 'F'):  # 32-bit integer / float grayscale: scale by its range
        values = np.asarray(image, np.float64)
        top = 65535.0 if image.mode == 'I' and values.max(initial=0) > 255 else 255.0
        if image.mode == 'F':
            top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == 'P' and 'transparency' in image.info:
        image = image.convert('RGBA')
    return np.asarray(image.convert('RGB'))


def image_size(path: str | Path, exif: str = 'ignore') -> tuple[int, int]:
    """(height, width) of the image at `path` as `read_image` returns it, from the header."""
    _check_exif(exif)
    try:
        with Image.open(path) as f:
            w, h = f.size
            if exif == 'apply' and f.getexif().get(_ORIENTATION) in _SWAPS_AXES:
                w, h = h, w
            return h, w
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f'{path}: not a readable image ({type(e).__name__}: {e})') from None


def verify_image(path: str | Path) -> str | None:
    """None if the file's structure is sound (PIL's verify: header, chunks and checksums; a
    zero-byte or cut-off PNG fails, a cut-off JPEG only when decoded), else the reason."""
    try:
        with Image.open(path) as f:
            f.verify()
        return None
    except Exception as e:  # PIL raises many types for corrupt files
        return f'{type(e).__name__}: {e}'


def _check_exif(exif: str) -> None:
    if exif not in EXIF_MODES:
        raise UserError(f'exif must be one of {EXIF_MODES}, got {exif!r}')
