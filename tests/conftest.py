"""Shared pytest setup. Runs before any test module imports numba."""
import os

# No NVIDIA driver here: run numba.cuda kernels on Numba's CUDA simulator (the
# variable is read when numba is first imported; CPU kernels ignore it).
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
