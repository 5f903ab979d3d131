"""mnist-numba-bench: the harness, CLI, results store, reports and profiling."""
