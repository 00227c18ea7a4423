"""Side-by-side benchmarks: `python -m bench <name> [--quick]`; see BENCHMARKS.md."""
