"""Reference implementations used by the parity tests and benchmarks (they import torch), and
fault injection (faults.py, no torch)."""
