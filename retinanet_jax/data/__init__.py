"""Input: dataset sources, numpy / PIL / OpenCV transforms and grain pipelines.

Nothing in this package imports model code; model code never imports this package.
"""
