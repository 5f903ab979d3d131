"""The machine's own ceilings, measured like any kernel: the report draws every
kernel cell against them (a roofline).

- ``fma_peak``: FLOP/s of independent fused multiply-adds on registers only --
  ACCUMULATORS vector accumulators updated in turn, enough independent chains to
  cover the FMA latency on both FMA ports, no memory traffic in the loop. Shape
  (n,): n passes over the accumulators; float32 and float64 (the float64 cells
  are the float64 ceiling).
- ``stream_triad``: bytes/s of a[i] = b[i] + s·c[i] (STREAM's triad: two reads,
  one write per element) over arrays far larger than the L2.

Both are one body compiled serial and parallel; the parallel version gives each
thread its own accumulators (fma) or its own slice (triad). Their references
make them checkable: the accumulators after n passes have a closed form, the
triad is a NumPy expression.
"""
import numpy as np
from numba import prange

from ._numba import TARGET, njit, serial_and_parallel, stack_array
from .family import KernelFamily

LANES = TARGET["vector_bits"] // 32          # float32 lanes of one vector register
ACCUMULATORS = 10                            # independent vector chains per thread
WIDTH = ACCUMULATORS * LANES                 # float32 elements of one thread's accumulators
A, B = 0.999999, 1e-7                        # acc <- acc·A + B stays bounded and finite


@njit
def _fma_chains(acc, passes, a, b):
    # The block lives in a stack array for the whole loop (no aliasing, so LLVM keeps
    # it in ACCUMULATORS registers): each pass is WIDTH independent FMAs, no memory.
    regs = stack_array(WIDTH, acc.dtype)
    for j in range(WIDTH):
        regs[j] = acc[j]
    for _ in range(passes):
        for j in range(WIDTH):
            regs[j] = regs[j] * a + b
    for j in range(WIDTH):
        acc[j] = regs[j]


def _fma_peak(acc, passes, a, b):
    """acc: (blocks, WIDTH); each block is one task's accumulators."""
    for t in prange(acc.shape[0]):
        _fma_chains(acc[t], passes, a, b)


def _triad(a, b, c, s):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


fma_serial, fma_parallel = serial_and_parallel(_fma_peak)
triad_serial, triad_parallel = serial_and_parallel(_triad)


def fma_reference(acc, passes):
    """acc after ``passes`` updates acc <- acc·A + B, in closed form."""
    an = A ** passes
    return acc * an + B * (1 - an) / (1 - A)


def _fma_family():
    # shape = (passes, blocks): every version updates ``blocks`` accumulator blocks
    # of WIDTH elements ``passes`` times; the parallel one spreads the blocks over
    # its threads, so with as many blocks as cores it measures every core at once.
    def make(shape, dtype, rng):
        return rng.random((shape[1], WIDTH)).astype(dtype), shape[0]

    def run(kernel):
        def version(acc, passes):
            t = acc.dtype.type
            kernel(acc, passes, t(A), t(B))
            return acc
        return version

    fam = KernelFamily("fma_peak", fma_reference, make, outputs=("acc",),
                       flops=lambda s: 2.0 * s[0] * s[1] * WIDTH, depth=lambda s: s[0],
                       dtypes=("float32", "float64"), sweep_shapes=[(100_000, 16)],
                       check_shapes=[(1, 1), (7, 3), (1000, 2)])
    fam.version(run(fma_serial), name="numba_serial")
    fam.version(run(fma_parallel), name="numba_parallel")
    return fam


def _triad_family():
    def make(shape, dtype, rng):
        n = shape[0]
        return (np.empty(n, dtype), rng.random(n).astype(dtype), rng.random(n).astype(dtype), 3.0)

    def run(kernel):
        def version(a, b, c, s):
            kernel(a, b, c, a.dtype.type(s))
            return a
        return version

    fam = KernelFamily("stream_triad", lambda a, b, c, s: b + s * c, make, outputs=("a",),
                       nbytes=lambda s, itemsize: 3.0 * itemsize * s[0], dtypes=("float32",),
                       # 3 x 256 MiB: past every cache a VM reports
                       sweep_shapes=[(1 << 26,)], check_shapes=[(1,), (33,), (4099,)])
    fam.version(run(triad_serial), name="numba_serial")
    fam.version(run(triad_parallel), name="numba_parallel")
    fam.version(lambda a, b, c, s: np.add(b, s * c, out=a), name="numpy", library="numpy")
    return fam


FAMILIES = [_fma_family(), _triad_family()]
