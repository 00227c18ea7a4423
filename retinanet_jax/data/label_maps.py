"""Label maps: contiguous training labels 0..K-1 <-> dataset category ids, and class names.

COCO's 80 category ids run from 1 to 90 with gaps; tfds' coco/2017 labels are the contiguous
indices of these ids in sorted order, which is what our models predict. Evaluation maps
predictions back with `LabelMap.category_ids`.
"""

import dataclasses

from retinanet_jax.errors import UserError

COCO_NAMES = (
    'person',
    'bicycle',
    'car',
    'motorcycle',
    'airplane',
    'bus',
    'train',
    'truck',
    'boat',
    'traffic light',
    'fire hydrant',
    'stop sign',
    'parking meter',
    'bench',
    'bird',
    'cat',
    'dog',
    'horse',
    'sheep',
    'cow',
    'elephant',
    'bear',
    'zebra',
    'giraffe',
    'backpack',
    'umbrella',
    'handbag',
    'tie',
    'suitcase',
    'frisbee',
    'skis',
    'snowboard',
    'sports ball',
    'kite',
    'baseball bat',
    'baseball glove',
    'skateboard',
    'surfboard',
    'tennis racket',
    'bottle',
    'wine glass',
    'cup',
    'fork',
    'knife',
    'spoon',
    'bowl',
    'banana',
    'apple',
    'sandwich',
    'orange',
    'broccoli',
    'carrot',
    'hot dog',
    'pizza',
    'donut',
    'cake',
    'chair',
    'couch',
    'potted plant',
    'bed',
    'dining table',
    'toilet',
    'tv',
    'laptop',
    'mouse',
    'remote',
    'keyboard',
    'cell phone',
    'microwave',
    'oven',
    'toaster',
    'sink',
    'refrigerator',
    'book',
    'clock',
    'vase',
    'scissors',
    'teddy bear',
    'hair drier',
    'toothbrush',
)
COCO_CATEGORY_IDS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)
VOC_NAMES = (
    'aeroplane',
    'bicycle',
    'bird',
    'boat',
    'bottle',
    'bus',
    'car',
    'cat',
    'chair',
    'cow',
    'diningtable',
    'dog',
    'horse',
    'motorbike',
    'person',
    'pottedplant',
    'sheep',
    'sofa',
    'train',
    'tvmonitor',
)
SHAPES_NAMES = ('circle', 'square', 'triangle')


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """names[i] and category_ids[i] describe training label i."""

    names: tuple[str, ...]
    category_ids: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.category_ids):
            raise UserError(
                f'LabelMap: {len(self.names)} names but {len(self.category_ids)} category ids'
            )
        if len(set(self.category_ids)) != len(self.category_ids):
            raise UserError(f'LabelMap: duplicate category ids in {self.category_ids}')

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def label_of(self, category_id: int) -> int:
        """Contiguous label of a dataset category id; ValueError naming it if unknown."""
        try:
            return self.category_ids.index(category_id)
        except ValueError:
            raise UserError(
                f'unknown category id {category_id}; known: {self.category_ids}'
            ) from None

    @classmethod
    def contiguous(cls, names: tuple[str, ...], first_id: int = 1) -> 'LabelMap':
        return cls(tuple(names), tuple(range(first_id, first_id + len(names))))


COCO = LabelMap(COCO_NAMES, COCO_CATEGORY_IDS)
VOC = LabelMap.contiguous(VOC_NAMES)
SHAPES = LabelMap.contiguous(SHAPES_NAMES)
# torchvision's COCO models predict 91 labels: label i is COCO category id i (0 is background,
# and the ten ids COCO left unused are 'N/A'), so no id mapping happens.
_COCO_NAME_OF_ID = dict(zip(COCO_CATEGORY_IDS, COCO_NAMES, strict=True))
COCO91 = LabelMap(
    tuple('__background__' if i == 0 else _COCO_NAME_OF_ID.get(i, 'N/A') for i in range(91)),
    tuple(range(91)),
)


def for_num_classes(num_classes: int) -> LabelMap:
    """A label map for a model known only by its class count (a converted torchvision model):
    91 -> torchvision's COCO, 80 -> COCO, 20 -> VOC, 3 -> shapes, else class_0, class_1..."""
    known = {91: COCO91, 80: COCO, 20: VOC, 3: SHAPES}
    if num_classes in known:
        return known[num_classes]
    return LabelMap.contiguous(tuple(f'class_{i}' for i in range(num_classes)))
