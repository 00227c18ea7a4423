"""Fine-tuning: a pretrained detector's weights into a RetinaNet of another class count.

  not_loaded = transfer(target, source, source_names, target_names)   # in place

Every variable of `target` whose path (backbone.layer1.0.conv1.kernel, fpn..., heads...) and
shape match a variable of `source` takes its value (cast to the target's dtype; a frozen batch
norm's statistics fill a trainable one's, and back). The class output conv
(classification_head.output, channel a * K + k for anchor a and class k) goes by name where
both `source_names` and `target_names` are known and differ: it keeps its fresh initialisation
(normal(0.01) weights, the prior bias -log((1 - pi) / pi)) except the channels of classes named
in both, which take the source's (say, person and car out of COCO's 91; or the same classes in
another order). Where names are unknown it is loaded only if its shape matches. What is not
loaded is returned, one 'path: why' each, for the one line the caller prints.
"""

import numpy as np
from flax import nnx

from retinanet_jax.models.retinanet import RetinaNet

CLASS_OUTPUT = ('classification_head', 'output')


def transfer(
    target: RetinaNet,
    source: RetinaNet,
    source_names: tuple[str, ...] | None = None,
    target_names: tuple[str, ...] | None = None,
) -> list[str]:
    """Copies `source`'s weights into `target` (module docstring); returns what was not
    loaded, 'path: why'."""
    found = dict(nnx.to_flat_state(nnx.state(source)))
    rows = _shared_classes(source_names, target_names)
    updates, not_loaded = [], []
    for path, variable in nnx.to_flat_state(nnx.state(target)):
        name = '.'.join(map(str, path))
        if path not in found:
            not_loaded.append(f'{name}: not in the source')
            continue
        value = np.asarray(found[path][...])
        shape = tuple(variable.shape)
        by_name = tuple(path[:2]) == CLASS_OUTPUT and source_names and target_names
        if by_name and list(source_names) != list(target_names):
            mixed = _class_rows(np.asarray(variable[...]), value, rows, len(target_names))
            if mixed is not None:
                updates.append((path, variable.replace(mixed.astype(variable.dtype))))
                kept = ', '.join(target_names[k] for k, _ in rows) or 'no class'
                not_loaded.append(f'{name}: the rows of {kept} only ({value.shape} -> {shape})')
                continue
        if value.shape == shape:
            updates.append((path, variable.replace(value.astype(variable.dtype))))
        else:
            not_loaded.append(f'{name}: shape {value.shape} in the source, {shape} here')
    nnx.update(target, nnx.from_flat_state(updates))
    return not_loaded


def _shared_classes(source_names, target_names) -> list[tuple[int, int]]:
    """[(target class k, source class j)] of the classes named in both."""
    if not source_names or not target_names:
        return []
    where = {name: j for j, name in enumerate(source_names)}
    return [(k, where[name]) for k, name in enumerate(target_names) if name in where]


def _class_rows(fresh: np.ndarray, value: np.ndarray, rows, num_target: int):
    """`fresh` with the channels of shared classes taken from `value` (last axis: anchor-major,
    a * K + k); None where the layers differ in more than their class count."""
    num_anchors = fresh.shape[-1] // num_target
    num_source = value.shape[-1] // num_anchors
    if num_anchors * num_source != value.shape[-1] or value.shape[:-1] != fresh.shape[:-1]:
        return None
    out = fresh.copy()
    for a in range(num_anchors):
        for k, j in rows:
            out[..., a * num_target + k] = value[..., a * num_source + j]
    return out
