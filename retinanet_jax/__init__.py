"""RetinaNet in JAX and Flax NNX. The map, bottom layer first (imports run up this list only;
tests/test_structure.py checks it):

  ops/          pure detection math: boxes, anchors, matching, losses, NMS, post-processing
  models/       ResNet, FPN, heads, RetinaNet (forward only); torchvision weight import
  data/         sources (one module per format), image files, transforms, the resumable
                pipeline, the input position a checkpoint records, bad records
  inference/    a model from wherever it lives (model_path, loading), the Predictor, export
  evaluation/   a model on a split (COCO metrics, validation loss), VOC AP, error analysis,
                analysis files and pictures, anchor fit
  training/     train_and_evaluate: the loop, its hooks, the train step and state, optimiser,
                EMA, preemption, TensorBoard writer
  commands/     the command line: python -m retinanet_jax <command> (train, predict, evaluate,
                analyze, export, convert, anchors, show_data)
  testing/      reference implementations for parity tests and benchmarks

Cross-cutting, at the top: errors (UserError), settings (a run's config -> typed settings),
checkpoint, sharding, compilation_cache, compiler_options, visualize.
"""

__version__ = '0.1.0'
