"""Inference: a trained model, from wherever it lives, ready to predict.

  model_path.py       the one reading of a model path: a run (RUN, RUN:best), a model directory,
                      a torchvision state dict file
  loading.py          load_predictor(path) -> Predictor
  predictor.py        Predictor (immutable), make_predict_step (also training's validation
                      step), eval_graphdef
  tiling.py           sliced inference: large images cut into overlapping windows, batched
                      through the predict step, their detections merged (predict_tiled)
  export.py           the whole detector as one function of uint8 images; export_model writes
                      StableHLO and ONNX files
  detect_template.py  a TEMPLATE, not a module of this package: copied into every export
                      folder as detect.py, it runs an export with onnxruntime or JAX alone

The Python API:
  from retinanet_jax.inference import load_predictor
  predictor = load_predictor('/tmp/shapes')          # or RUN:best, a model dir, a .pth file
  detections = predictor.predict_image(image)        # uint8 [H, W, 3] RGB
"""

from retinanet_jax.inference.loading import load_predictor, load_run
from retinanet_jax.inference.predictor import Predictor, eval_graphdef, make_predict_step

__all__ = ['Predictor', 'eval_graphdef', 'load_predictor', 'load_run', 'make_predict_step']
