"""Input: dataset sources, tf.data transforms and pipelines (TensorFlow is used here only).

Nothing in this package imports model code; model code never imports this package.
"""
