"""The demo race: our README demo against torchvision's RetinaNet, trained on the same `shapes`
data for the same wall time, then evaluated the same way.

  python -m bench race            (about 20 minutes: the demo, then torchvision for as long)

  ours         `python train.py --config=configs/shapes.py` as the README runs it (its own
               process); its training loop's wall time (compilation included) is the budget
  torchvision  RetinaNet(BackboneWithFPN(resnet18 with trainable BatchNorm2d, C3-C5, FPN 64 wide,
               LastLevelP6P7 from C5), RetinaNetHead with GroupNorm(32) cut to the same head
               depth), 3 classes, 128x128 images, the demo's anchor sizes, torchvision's loss
               and post-processing (100 detections per image, as COCO counts); the same optimiser
               recipe as configs/shapes.py (AdamW, kernels-only weight decay, gradient clipping,
               linear warmup then cosine decay to 0) over as many steps as fit in the budget
               (its speed is measured first on a throwaway model), batch 16, the same flip
               augmentation, 2 intra-op threads, its own process
Both are scored with our COCO evaluator (pycocotools) on the same 200 validation images.
"""

from bench.isolated import child_main, measure


def run(quick: bool = False, threads: int = 2, device: str = 'cpu') -> list:
    if device != 'cpu':
        raise SystemExit('bench race: the demo race is a CPU benchmark')
    ours = measure('bench.race', 'ours', quick=quick)
    budget = ours.extra['train_seconds']
    o = ours.extra
    print(
        f'ours: mAP {o["AP"]:.3f} in {budget:.0f} s of training ({o["steps"]} steps), '
        f'{o["command_seconds"]:.0f} s for the whole command'
    )
    ref = measure('bench.race', 'torchvision', quick=quick, budget=budget, threads=threads)
    r = ref.extra
    print(
        f'torchvision: mAP {r["AP"]:.3f} in {r["train_seconds"]:.0f} s of training '
        f'({r["steps"]} steps at {r["steps_per_second"]:.2f}/s)'
    )
    ours.name = f'ours: shapes demo, mAP {ours.extra["AP"]:.3f} (AP50 {ours.extra["AP50"]:.3f})'
    ref.name = f'torchvision: same budget, mAP {ref.extra["AP"]:.3f} (AP50 {ref.extra["AP50"]:.3f})'
    verdict = 'ours ahead' if o['AP'] > r['AP'] else 'torchvision ahead'
    print(f'race: mAP {o["AP"]:.3f} (ours) vs {r["AP"]:.3f} (torchvision), {verdict}')
    return [ours, ref]


# --quick: a few steps of the demo on a few images (a smoke test of this benchmark).
QUICK = {
    'train_steps': 3,
    'batch_size': 2,
    'eval_every': 3,
    'checkpoint_every': 3,
    'optim.warmup_steps': 1,
    'data.options.sizes': {'train': 16, 'validation': 4},
}


def demo_config(quick: bool):
    from configs import shapes

    config = shapes.get_config()
    for key, value in (QUICK if quick else {}).items():
        *sections, name = key.split('.')
        target = config
        for section in sections:
            target = target[section]
        target[name] = value
    return config


def child(side, *, quick, budget=None, threads=2):
    if side == 'ours':
        return ours_demo(quick)
    return torchvision_race(quick, budget, threads)


def ours_demo(quick: bool):
    """The README command in a fresh process of its own (compile included, warm cache or not as
    the caller's environment has it), its metrics.json read back."""
    import json
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    from bench.timing import Timing

    overrides = [
        f'--config.{k}={v}' for k, v in QUICK.items() if quick and k != 'data.options.sizes'
    ]
    if quick:
        overrides.append("--config.data.options.sizes={'train': 16, 'validation': 4}")
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        command = [
            sys.executable,
            'train.py',
            '--config=configs/shapes.py',
            f'--workdir={workdir}',
            *overrides,
        ]
        proc = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        metrics = json.loads((Path(workdir) / 'metrics.json').read_text())
    ms = metrics['train_seconds'] * 1e3
    extra = {k: metrics[k] for k in ('AP', 'AP50', 'AP75', 'train_seconds', 'step')}
    extra.update(command_seconds=seconds, steps=metrics['step'])
    return Timing('ours', ms, ms, 1, 0.0, extra=extra)


def torchvision_race(quick: bool, budget: float, threads: int):
    import time

    import torch

    from bench.timing import Timing
    from retinanet_jax import settings

    torch.set_num_threads(threads)
    s = settings.from_config(demo_config(quick))  # the demo's typed settings, read once
    data = ShapesBatches(s)
    # Its speed, on a throwaway model, decides how many steps fit in the budget.
    probe = build_torchvision(s)
    probe_opt, _ = optimiser(probe, s.optim, 1000)
    for i in range(3 if quick else 15):
        if i == 2:
            start = time.perf_counter()
        train_step(probe, probe_opt, data.batch(i))
    step_seconds = (time.perf_counter() - start) / ((3 if quick else 15) - 2)
    steps = max(int(budget / step_seconds), 2)
    print(f'torchvision: {1 / step_seconds:.2f} steps/s -> {steps} steps in {budget:.0f} s')
    torch.manual_seed(s.seed)
    model = build_torchvision(s)
    opt, schedule = optimiser(model, s.optim, steps)
    start = time.perf_counter()
    done = 0
    while done < steps:  # the whole schedule (the probe sized it to the budget)
        train_step(model, opt, data.batch(done))
        schedule.step()
        done += 1
    train_seconds = time.perf_counter() - start
    metrics = evaluate_torchvision(model, s)
    extra = {k: metrics[k] for k in ('AP', 'AP50', 'AP75')}
    extra.update(train_seconds=train_seconds, steps=done, steps_per_second=done / train_seconds)
    ms = train_seconds * 1e3
    return Timing('torchvision', ms, ms, 1, 0.0, extra=extra)


def build_torchvision(s):
    import functools

    import torch
    from torchvision.models import resnet18, resnet34, resnet50
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    m = s.model
    body = {18: resnet18, 34: resnet34, 50: resnet50}[m.depth](
        weights=None, norm_layer=torch.nn.BatchNorm2d
    )
    channels = [c * (4 if m.depth >= 50 else 1) for c in (128, 256, 512)]
    backbone = BackboneWithFPN(
        body,
        {'layer2': '0', 'layer3': '1', 'layer4': '2'},
        channels,
        m.fpn_width,
        extra_blocks=LastLevelP6P7(channels[-1], m.fpn_width),
    )
    head = RetinaNetHead(
        m.fpn_width, 9, m.num_classes, norm_layer=functools.partial(torch.nn.GroupNorm, 32)
    )
    head.classification_head.conv = head.classification_head.conv[: m.head_depth]
    head.regression_head.conv = head.regression_head.conv[: m.head_depth]
    size = s.input.image_size[0]
    return RetinaNet(
        backbone,
        m.num_classes,
        min_size=size,
        max_size=size,
        head=head,
        anchor_generator=anchor_generator(s.anchors),
        detections_per_img=100,
    )


def anchor_generator(a):
    """torchvision's AnchorGenerator with these anchors' (AnchorConfig) sizes, scales, ratios."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple(tuple(size * s for s in a.scales) for size in a.sizes)
    return AnchorGenerator(sizes, (tuple(a.aspect_ratios),) * len(sizes))


def optimiser(model, o, steps: int):
    """configs/shapes.py's recipe in torch: AdamW with weight decay on kernels only, warmup
    from lr * warmup_factor, then cosine decay to 0 at `steps`."""
    import math

    import torch

    kernels = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {'params': kernels, 'weight_decay': o.weight_decay},
            {'params': others, 'weight_decay': 0.0},
        ],
        lr=o.lr,
    )
    opt.grad_clip = o.grad_clip
    warmup = min(o.warmup_steps, max(steps - 1, 1))

    def factor(step):
        if step < warmup:
            return o.warmup_factor + (1 - o.warmup_factor) * step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(model, opt, batch):
    import torch

    images, targets = batch
    model.train()
    losses = model(images, targets)
    loss = losses['classification'] + losses['bbox_regression']
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if opt.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
    opt.step()
    return float(loss.detach())


class ShapesBatches:
    """Batch k of the demo's training data: the config's shapes source in a seeded random order
    (a new permutation each epoch), flipped with probability 1/2, as torch tensors."""

    def __init__(self, s):
        import numpy as np

        from retinanet_jax import settings

        self.source, _ = settings.make_sources(s)
        self.split, self.batch_size = s.data.train_split, s.batch_size
        self.n = self.source.num_examples(self.split)
        self.rng = np.random.default_rng(s.seed)

    def batch(self, k: int):
        import numpy as np
        import torch

        epoch, offset = divmod(k * self.batch_size, self.n)
        order = np.random.default_rng([0, epoch]).permutation(self.n)
        images, targets = [], []
        for i in range(self.batch_size):
            e = self.source.example(self.split, int(order[(offset + i) % self.n]))
            image, boxes = e['image'], e['boxes'].copy()
            if self.rng.random() < 0.5:
                image = image[:, ::-1]
                boxes[:, [0, 2]] = image.shape[1] - boxes[:, [2, 0]]
            images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) / 255.0)
            targets.append(
                {
                    'boxes': torch.from_numpy(boxes).float(),
                    'labels': torch.from_numpy(e['labels']).long(),
                }
            )
        return images, targets


def evaluate_torchvision(model, s) -> dict:
    import numpy as np
    import torch

    from retinanet_jax import settings
    from retinanet_jax.evaluation import coco_metrics

    _, source = settings.make_sources(s)
    split = s.data.eval_split
    evaluator = coco_metrics.make_evaluator(source, split)
    model.eval()
    d = 100
    with torch.inference_mode():
        for i in range(source.num_examples(split)):
            e = source.example(split, i)
            out = model([torch.from_numpy(e['image']).permute(2, 0, 1) / 255.0])[0]
            n = min(len(out['scores']), d)
            dets = {
                'boxes': np.zeros((1, d, 4)),
                'scores': np.zeros((1, d)),
                'labels': np.zeros((1, d), int),
                'valid': np.zeros((1, d), bool),
            }
            dets['boxes'][0, :n] = out['boxes'][:n].numpy()
            dets['scores'][0, :n] = out['scores'][:n].numpy()
            dets['labels'][0, :n] = out['labels'][:n].numpy()
            dets['valid'][0, :n] = True
            evaluator.add_batch(
                dets, {'image_id': np.array([e['image_id']]), 'valid': np.ones(1, bool)}
            )
    return evaluator.metrics()


if __name__ == '__main__':
    child_main(child)
