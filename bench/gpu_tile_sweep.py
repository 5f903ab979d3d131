"""Tile-config sweep of the CUDA matmul v5 (A·B) on a real GPU, v4 beside it.

Each config is validated against float64 NumPy on 4096³ and on an odd
1031×517×263, then timed with CUDA events. The fastest config valid on both
shapes becomes v5's for a rerun of gpu_bench's matmul section into the same
folder; that choice is the V5 written in kernels/cuda_matmul.py
(results/gpu/sweep.json holds the run that chose BK=16).

    python -m bench.gpu_tile_sweep $OUT/sweep.json
"""
import json
import os
import sys

import numpy as np

V4 = "v4_2d_register_tiled"
V5 = "v5_prefetch_register_tiled"
CONFIGS = [(V4, dict(BM=128, BN=128, BK=8, TM=8, TN=8)),
           (V5, dict(BM=128, BN=128, BK=8, TM=8, TN=8)),
           (V5, dict(BM=128, BN=128, BK=16, TM=8, TN=8)),
           (V5, dict(BM=128, BN=64, BK=8, TM=8, TN=4)),
           (V5, dict(BM=128, BN=64, BK=16, TM=8, TN=4)),
           (V5, dict(BM=64, BN=64, BK=16, TM=4, TN=4))]
SHAPES = [(4096, 4096, 4096), (1031, 517, 263)]


def sweep():
    from numba import cuda
    from bench.gpu_bench import device_seconds
    from kernels import cuda_matmul
    rng = np.random.default_rng(0)
    rows = []
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        want = a.astype(np.float64) @ b
        da, db = cuda.to_device(a), cuda.to_device(b)
        out = cuda.device_array((m, n), np.float32)
        for version, cfg in CONFIGS:
            row = dict(shape=[m, n, k], version=version, config=cfg)
            run = lambda: cuda_matmul.launch(version, "nn", da, db, out=out, config=cfg)  # noqa: E731
            try:
                run()
                err = float(np.max(np.abs(out.copy_to_host() - want)) / np.max(np.abs(want)))
            except Exception as e:   # recorded as a failure, never timed
                rows.append(row | {"error": f"{type(e).__name__}: {e}"[:300]})
                continue
            row["err"] = err
            if err < 1e-4:
                row["gflops"] = 2 * m * n * k / np.median(device_seconds(run, 5)) / 1e9
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    path = (argv or sys.argv[1:])[0]
    rows = sweep()
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    valid = {}
    for r in rows:
        if r["version"] == V5 and r.get("gflops"):
            valid.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r)
    best = max((v for v in valid.values() if len(v) == len(SHAPES)), key=lambda v: v[0]["gflops"])
    print("chosen v5 config:", best[0]["config"])
    from bench.gpu_bench import main as gpu_bench
    from kernels import cuda_matmul
    cuda_matmul.V5.update(best[0]["config"])
    gpu_bench(["--out", os.path.dirname(os.path.abspath(path)), "--sections", "matmul"])


if __name__ == "__main__":
    main()
