"""RetinaNet R50-FPN on COCO 2017, the paper's 1x recipe (90k iterations at batch 16).

  python train.py --config=configs/coco.py --workdir=/tmp/coco \
      --config.init.backbone=/path/to/resnet50-0676ba61.pth

COCO must be prepared for tensorflow-datasets (`tfds build coco/2017
--file_format=array_record`, or set --config.data.options.data_dir). The backbone is a
torchvision ImageNet ResNet-50 state dict (.pth / .safetensors / .npz), loaded through the
convert command; without one the run trains from scratch (and will not reach the paper's
numbers).

The recipe: SGD momentum 0.9, lr 0.01 (batch 16), weight decay 1e-4 on kernels, linear warmup
over 1000 iterations from lr/1000, 10x drops at 60k and 80k of 90k iterations, horizontal
flip, stem + res2 and every BatchNorm frozen, P6 from C5, focal loss alpha 0.25 gamma 2,
smooth L1 (beta 0.11), IoU 0.5 / 0.4 matching.

Departures, on purpose: images are resized to a short side of 800 unless the long side would
exceed 1024, then padded to a static 1024x1024 (jit needs static shapes; most COCO images end
at 1024x768, a little under the paper's 800x1067). For the paper's scale set
--config.input.image_size='(1344,1344)' --config.input.max_side=1333 (~1.7x the compute). The
model computes in bfloat16 (parameters, BatchNorm's affine step and the output convolutions in
float32); --config.model.dtype=float32 for the paper's arithmetic.
"""

from ml_collections import config_dict

from retinanet_jax.settings import default_config


def get_config():
    # Every key at its default (retinanet_jax/settings.py default_config, from the settings
    # classes): the paper's R50-FPN (P6 from C5, frozen BN, stem + res2 frozen), its anchors and
    # loss, and the SGD 1x recipe. What differs:
    c = default_config()
    c.data.dataset = 'coco/2017'
    c.data.options = {'data_dir': config_dict.placeholder(str)}  # tfds data_dir
    c.input.update(image_size=(1024, 1024), short_side=800, max_side=1024)
    c.model.dtype = 'bfloat16'
    c.batch_size = 16
    c.train_steps = 90_000
    return c
