"""Print, as JSON, what the compiled float32 micro-kernel's depth loop does on the
target this process compiles for (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the
host): its fused multiply-adds, the vector registers they use, and any vector
register moved to or from the stack inside the loop (a spilled accumulator).

Run in a fresh process with an empty MNIST_BENCH_CACHE: Numba cannot show the
assembly of code it loaded from its cache.
"""
import json

import numpy as np
from asm_loops import fma_loops

from mnist_numba_bench.kernels import matmul
from mnist_numba_bench.kernels._numba import TARGET

MR, NR = matmul.MR, matmul.NR
micro = matmul._f32["pieces"]["_micro"]
kc = 8
A = np.ones(MR * kc, np.float32)
B = np.ones(NR * kc, np.float32)
for C in (np.zeros((MR, NR), np.float32), np.zeros((NR, MR), np.float32).T):  # both store paths
    micro(A, 0, B, 0, kc, C, 0, 0, False)
    assert (C == kc).all()

loops = fma_loops(micro)
print(json.dumps({"isa": TARGET["isa"], "cpu_name": TARGET["cpu_name"], "MR": MR, "NR": NR,
                  "vector_bits": TARGET["vector_bits"], "loops": loops}))
