"""Run-to-run spread of speed-ups over numpy between two stored runs of the same
sweep: for each backend cell, the median of its per-round ratios to numpy's cell
(the pairing the report uses) in each run, and how much the two differ.

    python results/reproducibility/spread.py RUN_A.jsonl RUN_B.jsonl
"""
import json
import statistics
import sys


def cells(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("type") == "cell" and r.get("status") == "ok":
                out[r["model"], r["backend"], r["batch_size"]] = r["samples_s"]
    return out


def main(a, b):
    runs = [cells(a), cells(b)]
    worst = 0.0
    for key in sorted(runs[0]):
        model, backend, bs = key
        if backend == "numpy" or key not in runs[1]:
            continue
        speedups = [statistics.median(x / y for x, y in zip(run[model, "numpy", bs], run[key]))
                    for run in runs]
        diff = speedups[1] / speedups[0] - 1
        worst = max(worst, abs(diff))
        print(f"{model:8s} {backend:14s} batch {bs:<5} {speedups[0]:.3f} {speedups[1]:.3f} "
              f"{diff * 100:+.1f} %")
    print(f"largest difference {worst * 100:.1f} %")


if __name__ == "__main__":
    main(*sys.argv[1:3])
