"""Hand-written Numba kernels (CPU and CUDA), one file per kernel family."""
