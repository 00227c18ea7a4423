"""Reference implementations used by the parity tests and benchmarks (they import torch)."""
