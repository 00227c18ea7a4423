"""Evaluation: a model on a split (split_evaluation.py: COCO metrics and the validation loss,
the one evaluation training and the commands run), coco_metrics.py (CocoEvaluator over
pycocotools), voc_metric.py, error_analysis.py (confusion matrix, TIDE), analysis.py (the
analyze command's files), pictures.py, anchor_fit.py (anchor coverage of a split's boxes)."""
