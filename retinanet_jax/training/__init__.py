"""Training: trainer.train_and_evaluate(config, workdir), what `python train.py` runs; the loop
(loop.py) with its hooks (hooks.py, make_hooks: their one list), the sharded step (step.py),
the train state (state.py), optimiser (optim.py), EMA (ema.py), preemption (preemption.py) and
the TensorBoard writer (metric_writer.py)."""
