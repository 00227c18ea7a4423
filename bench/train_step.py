"""A full train step of R50-FPN RetinaNet (forward, loss, gradient, SGD update), against
torchvision's RetinaNet train step on the same device, for each backbone normalisation.

  ours         train_step.make_train_step with configs/coco.py (stem + res2 frozen, P6 from C5,
               80 classes, SGD momentum 0.9 + weight decay), state donated; the backbone's
               norm 'frozen' (FrozenBatchNorm), 'batch' (trainable, synchronised BatchNorm) or
               'group' (GroupNorm, 32 groups)
  torchvision  RetinaNet(resnet50(norm_layer=FrozenBatchNorm2d or BatchNorm2d),
               trainable_layers=3, LastLevelP6P7 from C5, 80 classes): model(images, targets),
               backward, SGD step; GeneralizedRCNNTransform sized to the input, so it only
               normalises and batches. Our 'frozen' row is compared with its FrozenBatchNorm2d
               model, 'batch' and 'group' with its trainable BatchNorm2d model.

CPU: 512x512, batch 2, float32 (torch with `threads` intra-op threads). GPU: 1024x1024,
batch 16, bfloat16 compute (ours: the model's bf16 path; torchvision: torch.autocast bf16).
Synthetic batches already on the device: 10 random boxes per image (ours padded to 100 with
label -1). Each side runs in its own process (peak memory is its own).
"""

from bench.isolated import child_main, measure, time_torch, xla_memory_mib

BOXES = 10
H100_BF16_TFLOPS = 989.4  # NVIDIA's datasheet, dense (no sparsity), H100 SXM


NORMS = ('frozen', 'batch', 'group')
REFERENCE_NORM = {'frozen': 'frozen', 'batch': 'batch', 'group': 'batch'}  # ours -> torchvision


def settings(quick: bool, device: str) -> dict:
    if quick:  # a smoke test of the benchmark: ResNet-18 trunks, tiny images
        return dict(size=64, batch=2, dtype='float32', runs=1, depth=18)
    if device == 'gpu':
        return dict(size=1024, batch=16, dtype='bfloat16', runs=20, depth=50)
    return dict(size=512, batch=2, dtype='float32', runs=5, depth=50)


def run(quick: bool = False, threads: int = 2, device: str = 'cpu', norms=None) -> list:
    from bench.peak import cpu_peak_gflops

    s = settings(quick, device)
    norms = norms or (('batch',) if quick else NORMS)
    what = f'R{s["depth"]}-FPN train step {s["size"]}x{s["size"]} batch {s["batch"]} {s["dtype"]}'
    refs = {}
    for norm in sorted({REFERENCE_NORM[n] for n in norms}):
        ref = measure(
            'bench.train_step', 'torchvision', device=device, threads=threads, norm=norm, **s
        )
        layer = 'FrozenBatchNorm2d' if norm == 'frozen' else 'BatchNorm2d'
        ref.name = f'torchvision: {what}, {layer}' + (' (autocast)' if device == 'gpu' else '')
        refs[norm] = ref
    # XLA's cost analysis of the step's HLO, counted by the CPU backend (on a GPU the
    # convolutions become cuDNN calls that its cost analysis leaves out).
    # On the CPU each 'ours' side counts its own step (no separate lowering).
    counted = None
    if device != 'cpu':
        counted = measure(
            'bench.train_step',
            'flops',
            {'JAX_PLATFORMS': 'cpu'},
            device='cpu',
            norms=list(norms),
            **s,
        )
    peak = cpu_peak_gflops(512 if quick else 4096) if device == 'cpu' else H100_BF16_TFLOPS * 1e3
    rows = []
    for norm in norms:
        ours = measure('bench.train_step', 'ours', device=device, threads=threads, norm=norm, **s)
        ours.name, ours.reference = f'ours: {what}, norm={norm}', refs[REFERENCE_NORM[norm]].name
        ours.flops = (counted or ours).extra['flops'][norm]
        gflops = ours.flops / ours.median_ms / 1e6
        print(
            f'{ours.name}: {s["batch"] * 1e3 / ours.median_ms:.1f} images/s, '
            f'{ours.flops / 1e9:.0f} GFLOP per step (XLA cost analysis), {gflops:.0f} GFLOP/s '
            f'= {gflops / peak:.0%} of the {peak:.0f} GFLOP/s peak'
        )
        rows.append(ours)
    for ref in refs.values():
        print(f'{ref.name}: {s["batch"] * 1e3 / ref.median_ms:.1f} images/s')
    return [*rows, *refs.values()]


def synthetic_boxes(rng, size: int, batch: int):
    import numpy as np

    wh = rng.uniform(32, size / 2, (batch, BOXES, 2))
    xy = rng.uniform(0, size, (batch, BOXES, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], -1).clip(0, size).astype(np.float32)
    labels = rng.integers(0, 80, (batch, BOXES)).astype(np.int32)
    return boxes, labels


def child(side, *, size, batch, dtype, runs, device, depth, threads=1, norm='frozen', norms=()):
    import numpy as np

    rng = np.random.default_rng(0)
    boxes, labels = synthetic_boxes(rng, size, batch)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    if side == 'ours':
        return ours_step(images, boxes, labels, dtype, depth, runs, device, norm)
    if side == 'flops':
        return ours_flops(images, boxes, labels, dtype, depth, norms)
    return torchvision_step(images, boxes, labels, dtype, depth, runs, device, threads, norm)


def ours_setup(images, boxes, labels, dtype, depth=50, compile=True, norm='frozen'):
    """(lowered, compiled, state, batch, compile ms) of our train step on this batch."""
    import time

    import numpy as np

    from configs import coco
    from retinanet_jax import settings, sharding
    from retinanet_jax.ops import anchors as anchor_lib
    from retinanet_jax.training import state as train_state
    from retinanet_jax.training import step as train_step

    batch, size = images.shape[:2]
    config = coco.get_config()
    config.model.update(dtype=dtype, depth=depth, norm=norm)
    config.batch_size = batch
    s = settings.from_config(config)
    mesh = sharding.make_mesh()
    graph, state = train_state.create_state(s, mesh)
    anchors = anchor_lib.generate_anchors((size, size), s.anchors)
    step = train_step.make_train_step(graph, np.asarray(anchors), s, mesh)
    m = s.input.max_boxes
    gt_boxes = np.zeros((batch, m, 4), np.float32)
    gt_labels = np.full((batch, m), -1, np.int32)
    gt_boxes[:, :BOXES], gt_labels[:, :BOXES] = boxes, labels
    data = sharding.to_global({'image': images, 'gt_boxes': gt_boxes, 'gt_labels': gt_labels}, mesh)
    start = time.perf_counter()
    lowered = step.lower(state, data)
    compiled = lowered.compile() if compile else None
    return lowered, compiled, state, data, (time.perf_counter() - start) * 1e3


def ours_step(images, boxes, labels, dtype, depth, runs, device, norm):
    import jax

    from bench.timing import flops_of, time_fn

    lowered, compiled, state, data, compile_ms = ours_setup(
        images, boxes, labels, dtype, depth, norm=norm
    )
    holder = {'state': state}

    def one_step():
        holder['state'], metrics = compiled(holder['state'], data)
        return jax.block_until_ready(metrics['loss'])

    t = time_fn('ours', one_step, runs)
    print(f'jax {jax.__version__} on {jax.devices()[0].device_kind}; loss {float(one_step()):.3f}')
    t.first_call_ms = compile_ms
    if device == 'cpu':
        t.extra = {'flops': {norm: flops_of(lowered)}}
    if device == 'gpu':
        t.peak_mib = xla_memory_mib(compiled)
    return t


def ours_flops(images, boxes, labels, dtype, depth, norms):
    """FLOPs of one train step of each norm, from XLA's cost analysis of the lowered HLO."""
    from bench.timing import Timing, flops_of

    flops = {}
    for norm in norms:
        lowered = ours_setup(images, boxes, labels, dtype, depth, compile=False, norm=norm)[0]
        flops[norm] = flops_of(lowered)
    return Timing('flops', 0.0, 0.0, 0, 0.0, extra={'flops': flops})


def torchvision_step(images, boxes, labels, dtype, depth, runs, device, threads, norm):
    import torch
    from torchvision.models import resnet18, resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device('cuda' if device == 'gpu' else 'cpu')
    if device == 'gpu':
        torch.backends.cudnn.benchmark = True
    size = images.shape[1]
    layer = FrozenBatchNorm2d if norm == 'frozen' else torch.nn.BatchNorm2d
    body = {18: resnet18, 50: resnet50}[depth](weights=None, norm_layer=layer)
    c5 = body.fc.in_features  # 2048 (ResNet-50) or 512 (ResNet-18)
    backbone = _resnet_fpn_extractor(
        body, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(c5, 256)
    )
    model = RetinaNet(backbone, num_classes=80, min_size=size, max_size=size).to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = [torch.from_numpy(im).permute(2, 0, 1).float().div(255).to(dev) for im in images]
    targets = [
        {'boxes': torch.from_numpy(b).to(dev), 'labels': torch.from_numpy(lab).long().to(dev)}
        for b, lab in zip(boxes, labels, strict=True)
    ]
    amp = dtype == 'bfloat16'

    def one_step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            losses = model(x, targets)
            loss = losses['classification'] + losses['bbox_regression']
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == 'gpu':
            torch.cuda.synchronize()
        return loss

    t = time_torch(one_step, runs, device)
    print(f'torch {torch.__version__}; loss {one_step().item():.3f}')
    return t


if __name__ == '__main__':
    child_main(child)
