"""The catalogue of dataset sources: make_source(name, **options) -> a data.source.Source.

'shapes'          synthetic, generated locally, no download (shapes.py)
'coco_folder'     a COCO json + an image folder: your own data (coco_folder.py)
'voc_folder'      Pascal VOC XML files (voc_folder.py)
'yolo_folder'     the ultralytics layout: data.yaml, images/, labels/ (yolo_folder.py)
'csv'             one box per row, keras-retinanet's and DeepForest's CSV (csv_source.py)
'coco/2017', 'voc/2007', 'voc/2012', 'voc/2007+2012'
                  through tensorflow-datasets (tfds_sources.py)
"""

from retinanet_jax.data.coco_folder import CocoFolderSource
from retinanet_jax.data.csv_source import CsvSource
from retinanet_jax.data.shapes import ShapesSource
from retinanet_jax.data.source import Source
from retinanet_jax.data.tfds_sources import NAMES as TFDS_NAMES
from retinanet_jax.data.tfds_sources import TfdsSource
from retinanet_jax.data.voc_folder import VocFolderSource
from retinanet_jax.data.yolo_folder import YoloFolderSource
from retinanet_jax.errors import UserError

FOLDERS = {
    'coco_folder': CocoFolderSource,
    'voc_folder': VocFolderSource,
    'yolo_folder': YoloFolderSource,
    'csv': CsvSource,
}
KNOWN = (*TFDS_NAMES, *FOLDERS, 'shapes')


def make_source(name: str, **options) -> Source:
    """The source called `name` (one of KNOWN) with its options; ValueError if unknown."""
    if name == 'shapes':
        return ShapesSource(**options)
    if name in FOLDERS:
        return FOLDERS[name](**options)
    if name in TFDS_NAMES:
        return TfdsSource(name, **options)
    raise UserError(f'unknown dataset {name!r}; known: {", ".join(KNOWN)}')
