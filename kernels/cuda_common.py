"""What every CUDA kernel file shares: whether a real GPU is there, launch sizes
that stay small under the CUDA simulator, host/device array handling, and a
KernelFamily whose versions are timed on device-resident inputs.

Every kernel of the suite loops over its work (elements, output tiles) with a
grid stride, so it is correct for any grid: on a GPU the grid covers the
problem in one pass, under the simulator (which runs each CUDA thread as a
Python thread, about a millisecond to start each) a grid of one or two small
blocks walks the whole problem.
"""
import math

import numpy as np
from numba import config, cuda

from .family import KernelFamily

# numba-cuda up to 0.30 registers an overload for np.row_stack while compiling
# its first kernel; NumPy 2.5 removed that alias of np.vstack, and every CUDA
# compile then fails with AttributeError. Restoring the alias changes nothing else.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

SIMULATOR = bool(config.ENABLE_CUDASIM)
SIMULATOR_REASON = "CUDA simulator: correctness only, not timed"

# Threads of a 1-D elementwise block, and the most blocks one launch uses.
THREADS = 32 if SIMULATOR else 256
MAX_BLOCKS = 2 if SIMULATOR else 65535


def gpu_available():
    """(True, "") on a real CUDA GPU; (False, why) otherwise, never raises."""
    if SIMULATOR:
        return False, f"no CUDA GPU ({SIMULATOR_REASON})"
    try:
        if cuda.is_available():
            return True, ""
        return False, "no CUDA GPU (numba.cuda.is_available() is False)"
    except Exception as e:  # a broken driver install is "unavailable", not a crash
        return False, f"no CUDA GPU ({type(e).__name__}: {e})"


def blocks_for(units, per_block=1):
    """Blocks covering ``units`` work items, ``per_block`` per block, capped."""
    return max(1, min(math.ceil(units / per_block), MAX_BLOCKS))


def is_device(a):
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host")


def device(a):
    """A device array as it is; a host array copied to the device."""
    return a if is_device(a) else cuda.to_device(np.ascontiguousarray(a))


def check_float32(name, a, ndim):
    if a.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")


def check_out(out, shape, name="out"):
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if out.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {out.dtype}")


class CudaKernelFamily(KernelFamily):
    """A KernelFamily on the GPU: ``check`` feeds the versions host arrays (each
    version uploads what it is given), timing hands them device-resident inputs
    (``to_device``) so that host<->device copies stay outside every sample."""

    device = "cuda"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("available", gpu_available)
        super().__init__(*args, **kwargs)

    def to_device(self, inputs):
        return tuple(cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in inputs)

    def synchronize(self):
        cuda.synchronize()
