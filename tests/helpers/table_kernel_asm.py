"""Print, as JSON, what the implicit convolution's depth loop (fma_table_rows,
A read through two tables of offsets) does for each matmul tile given as JSON
on the command line (default: every tile ``mnist-bench tune`` may pick here,
and the derived one), at the height table_tile cuts it to, on the target this
process compiles for: the fused multiply-adds of its innermost loop, and any
vector register moved to or from the stack there (a spilled accumulator or
broadcast).

Run in a fresh process with an empty MNIST_BENCH_CACHE: Numba cannot show the
assembly of code it loaded from its cache.
"""
import json
import sys

import numpy as np
from asm_loops import fma_loops

from mnist_numba_bench.bench.tune import tiles
from mnist_numba_bench.kernels import conv, matmul
from mnist_numba_bench.kernels._numba import TARGET

given_tiles = json.loads(sys.argv[1]) if len(sys.argv) > 1 else \
    [dict(MR=mr, NR=nr) for mr, nr in tiles(TARGET)] + [{k: TARGET["derived"][k] for k in ("MR", "NR")}]
report, seen = [], set()
for given in given_tiles:
    tile = conv.table_tile(dict(matmul.TILE, **given))
    if (tile["MR"], tile["NR"]) in seen:
        continue  # (its kernels compiled already: Numba shows no assembly a second time)
    seen.add((tile["MR"], tile["NR"]))
    suffix = f"_asm_{tile['MR']}x{tile['NR']}"
    forward = conv._build_implicit(tile, suffix)[0]["_implicit_forward"]
    pack = matmul.build(tile, suffix)["pieces"]
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((5, 3, 3, 3), np.float32)
    y = np.empty((2, 5, 6, 6), np.float32)
    forward(x, conv._pack_weights(w.reshape(5, -1), tile["NR"], pack), np.zeros(5, np.float32), y,
            conv._tap_offsets(3, 8, 8, 3, 3, 1), conv._pixel_offsets(x.shape, 6, 6, tile["MR"]), 1)
    assert (y == 27).all()
    loops = fma_loops(forward)
    # the innermost: the shortest loop with FMAs (the others hold it, with their own code)
    report.append({"given": given, "MR": tile["MR"], "NR": tile["NR"],
                   "depth_loop": min(loops, key=lambda loop: loop["length"]) if loops else None})
print(json.dumps({"isa": TARGET["isa"], "cpu_name": TARGET["cpu_name"], "vector_bits": TARGET["vector_bits"],
                  "table_max_rows": conv.TABLE_MAX_ROWS, "tiles": report}))
