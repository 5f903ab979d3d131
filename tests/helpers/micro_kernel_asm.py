"""Print, as JSON, what the compiled float32 micro-kernel's depth loop does on the
target this process compiles for (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, else the
host): its fused multiply-adds, the vector registers they use, and any vector
register moved to or from the stack inside the loop (a spilled accumulator).

Run in a fresh process with an empty MNIST_BENCH_CACHE: Numba cannot show the
assembly of code it loaded from its cache.
"""
import json
import re

import numpy as np

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

STACK = re.compile(r"%[xyz]mm\d+,\s*-?\d*\(%rsp\)|-?\d*\(%rsp\),\s*%[xyz]mm\d+")
loops = []
for asm in micro.inspect_asm().values():
    lines = asm.splitlines()
    labels = {line.strip()[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.LBB\w+:$", line)}
    for i, line in enumerate(lines):
        jump = re.match(r"^\s*j\w+\s+(\.LBB\w+)\s*$", line)
        if not jump or labels.get(jump.group(1), i) >= i:
            continue  # not a backward branch: not a loop
        body = lines[labels[jump.group(1)]:i + 1]
        fmas = [b for b in body if "vfmadd" in b or "vfmla" in b]
        if fmas:
            loops.append({"fmas": len(fmas),
                          "registers": sorted({r[:3] for b in fmas for r in re.findall(r"%([xyz]mm)\d+", b)}),
                          "stack_moves": [b.strip() for b in body if STACK.search(b)]})
print(json.dumps({"isa": TARGET["isa"], "cpu_name": TARGET["cpu_name"], "MR": MR, "NR": NR,
                  "vector_bits": TARGET["vector_bits"], "loops": loops}))
