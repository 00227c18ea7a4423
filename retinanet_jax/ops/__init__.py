"""Pure detection math (jax.numpy; static shapes, jit- and vmap-safe): boxes.py, anchors.py,
matching.py, losses.py, nms.py, postprocess.py, normalization.py. Nothing here imports another
layer of the package."""
