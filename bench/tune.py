"""`mnist-bench tune`: the matmul geometry measured on this machine.

Stage 1 sweeps register tiles (MR x NR) that fit the target's vector registers
(the micro-kernel holds MR x NR/L accumulators, NR/L vectors of B and one
broadcast: MR·V + V + 1 registers for V = NR/L), at the derived cache blocks;
stage 2 sweeps the cache blocks (KC, MC) around the best tile. Every candidate
is compiled (kernels/matmul.build), checked in all three forms against the
float64 reference on the family's odd shapes -- a wrong candidate is dropped,
never timed -- and then timed through the measurement core: all candidates of a
stage interleaved in shuffled rounds, one sample of each per round, at the
sweep's thread count, on a square product and the networks' largest ones.

The best geometry is kept in the user's cache directory with the CPU model, the
target and the compiler versions it was found for (kernels/target.py); every
later process on this CPU compiles with it, and every result records which
geometry it ran with (``tile_source``).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

SHAPES = [(1024, 1024, 1024), (256, 1024, 1024), (784, 128, 128)]


def add_arguments(parser):
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help=f"threads of the timed products (default {os.cpu_count()})")
    parser.add_argument("--rounds", type=int, default=7, help="samples per candidate (default 7)")
    parser.add_argument("--repeats", type=int, dest="rounds", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--quick", action="store_true", help="fewer candidates (a smoke run)")
    parser.add_argument("--tile", default=None, metavar="MRxNR",
                        help="skip the tile stage: sweep only the cache blocks of this tile")
    parser.add_argument("--dry-run", action="store_true", help="measure, but do not store the result")


def tiles(target):
    """Register tiles (MR, NR) the micro-kernel can hold on this target."""
    bits, registers = target["vector_bits"], target["vector_registers"]
    lanes = bits // 32
    out = []
    for v in (1, 2, 3, 4):
        for mr in range(2, 17):
            if mr * v + v + 1 <= registers and mr * v >= 8:
                out.append((mr, v * lanes))
    # the largest few per vector count: small tiles waste the B panel's reuse
    best = {}
    for mr, nr in out:
        best.setdefault(nr, []).append(mr)
    return [(mr, nr) for nr, mrs in best.items() for mr in sorted(mrs)[-3:]]


def blocks(tile, derived):
    """KC from half to four times the derived depth (a deeper KC passes over C
    fewer times; a shallower one keeps the B panel in L1), MC halved or not."""
    kc, mc = derived["KC"], derived["MC"]
    out = []
    for k in sorted({max(64, kc // 2 // 16 * 16), kc, kc * 2, kc * 4}):
        for m in sorted({max(tile["MR"], mc // 2 // tile["MR"] * tile["MR"]), mc // tile["MR"] * tile["MR"]}):
            out.append(dict(tile, KC=k, MC=max(tile["MR"], m)))
    return out


def check(kernel, tile):
    """(ok, worst error or why) of one compiled candidate in the three forms."""
    from ..kernels import matmul
    from ..models.checks import compare, tolerance_for
    rng = np.random.default_rng(0)
    worst = 0.0
    for m, k, n in matmul.CHECK_SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        for A, B in ((a, b), (a, np.ascontiguousarray(b.T).T), (np.ascontiguousarray(a.T).T, b)):
            c = np.empty((m, n), np.float32)
            kernel(A, B, c, True)
            result = compare(c, A.astype(np.float64) @ B, tolerance_for("float32", k))
            if not result.ok:
                return False, f"{tile}: wrong on {(m, k, n)}: {result.message}"
            worst = max(worst, result.worst)
    return True, worst


def tune_family(candidates: dict, parallel: bool):
    """The candidates as versions of one kernel family (C = A·B on the tuning
    shapes), so they are validated, timed and checked again after timing by the
    same unit as every kernel version (bench.kernel_sweep.KernelUnit)."""
    from ..kernels import matmul
    from ..kernels.family import KernelFamily

    def make_inputs(shape, dtype, rng):
        m, k, n = shape
        return rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)

    fam = KernelFamily("tune_matmul", lambda a, b: a @ b, make_inputs, outputs=("C",),
                       flops=lambda s: 2.0 * s[0] * s[1] * s[2], depth=lambda s: s[1],
                       sweep_shapes=SHAPES, check_shapes=matmul.CHECK_SHAPES)
    for name, kernel in candidates.items():
        def version(a, b, kernel=kernel):
            c = np.empty((a.shape[0], b.shape[1]), a.dtype)
            kernel(a, b, c, parallel)
            return c
        fam.version(version, name=name, library="numba")
    return fam


def measure(candidates, threads, rounds, log):
    """Every candidate on SHAPES through the supervisor's rounds (one shape at a
    time, the candidates interleaved in shuffled rounds), in this process where
    they were compiled: {name: {shape: GFLOP/s}} of the candidates that stayed valid."""
    from .kernel_sweep import KernelUnit, finalize
    from .supervise import LocalWorker, Progress, Supervisor
    if not candidates:
        return {}
    fam = tune_family(candidates, threads > 1)
    groups = [[{"kind": "kernel", "model": fam.name, "backend": name, "library": "numba",
                "device": "cpu", "shape": list(shape), "dtype": "float32", "threads": threads,
                "group": g} for name in candidates] for g, shape in enumerate(SHAPES)]
    for i, cell in enumerate(c for group in groups for c in group):
        cell["id"] = i
    cells = {}
    supervisor = Supervisor(lambda cell: "tune", None, lambda cell: cells.__setitem__(cell["id"], cell),
                            finalize, rounds, seed=threads,
                            make_worker=lambda key: LocalWorker(key, lambda cell: KernelUnit(cell, fam),
                                                                threads))
    try:
        supervisor.run(groups, Progress(sum(len(g) for g in groups), rounds))
    finally:
        supervisor.close()
    rates = {}
    for cell in cells.values():
        if cell["status"] != "ok":
            log(f"  {cell['backend']} {cell['shape']}: {cell['status']}: {cell.get('error')}")
            continue
        rates.setdefault(cell["backend"], {})[tuple(cell["shape"])] = cell["gflops"]
    return {name: r for name, r in rates.items() if len(r) == len(SHAPES)}


def score(rates):
    return float(np.exp(np.mean(np.log(list(rates.values())))))


def stage(label, tiles_, threads, rounds, log):
    from ..kernels import matmul
    compiled, results = {}, []
    for i, tile in enumerate(tiles_):
        name = "_".join(f"{k}{tile[k]}" for k in ("MR", "NR", "KC", "MC", "NC"))
        t0 = time.perf_counter()
        kernel = matmul.build(tile, f"_tune_{name}", cache=False)["gemm"]
        ok, what = check(kernel, tile)
        seconds = time.perf_counter() - t0
        log(f"{label} {i + 1}/{len(tiles_)} {name}: {'checked' if ok else 'WRONG'} "
            f"({seconds:.0f} s to compile and check)")
        if ok:
            compiled[name] = kernel
        results.append({"tile": tile, "name": name, "valid": ok,
                        "max_error" if ok else "error": what})
    rates = measure(compiled, threads, rounds, log)
    for r in results:
        if r["name"] in rates:
            r["gflops"] = {"x".join(map(str, s)): g for s, g in rates[r["name"]].items()}
            r["score"] = score(rates[r["name"]])
    return results


def main(args):
    from ..kernels import target
    from ..kernels._numba import TARGET
    if args.rounds < 3:
        raise ValueError("--rounds must be at least 3")
    import numba
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    derived = TARGET["derived"]
    candidates = [dict(derived, MR=mr, NR=nr) for mr, nr in tiles(TARGET)]
    if args.tile:
        try:
            mr, nr = (int(v) for v in args.tile.lower().split("x"))
        except ValueError:
            raise ValueError(f"--tile: {args.tile!r} is not like 13x32") from None
        if mr < 1 or nr < 1:
            raise ValueError(f"--tile {args.tile}: both sizes must be at least 1")
        lanes = TARGET["vector_bits"] // 32
        if nr % lanes or mr * (nr // lanes) + nr // lanes + 1 > TARGET["vector_registers"]:
            raise ValueError(f"--tile {args.tile}: does not fit {TARGET['vector_registers']} "
                             f"registers of {lanes} lanes")
        candidates = [dict(derived, MR=mr, NR=nr)]
    if args.quick:
        candidates = candidates[:3]
    log(f"tune: {TARGET['isa']} target {TARGET['cpu_name']}, {TARGET['vector_registers']} vector "
        f"registers of {TARGET['vector_bits']} bits; derived geometry {derived}")
    first = stage("tiles", candidates, args.threads, args.rounds, log)
    best_tile = max((r for r in first if r.get("score")), key=lambda r: r["score"])
    second = stage("blocks", [b for b in blocks(best_tile["tile"], derived)
                              if b != best_tile["tile"]][:2 if args.quick else None],
                   args.threads, args.rounds, log) + [best_tile]
    best = max((r for r in second if r.get("score")), key=lambda r: r["score"])
    derived_result = next((r for r in first if r["tile"] == derived), None)
    record = {"tile": best["tile"], "score_gflops": best["score"], "gflops": best["gflops"],
              "derived": derived, "derived_score_gflops": derived_result and derived_result.get("score"),
              "cpu_model": target.cpu_model(), "target": {k: TARGET[k] for k in
                                                          ("cpu_name", "isa", "vector_bits",
                                                           "vector_registers", "caches", "features_sha")},
              "compilers": target.compiler_versions(), "threads": args.threads,
              "shapes": ["x".join(map(str, s)) for s in SHAPES], "rounds": args.rounds,
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "candidates": first + second[:-1]}
    path = target.tuned_path(record["cpu_model"], TARGET["cpu_name"], TARGET["isa"])
    print(f"best geometry {best['tile']}: {best['score']:.0f} GFLOP/s (geometric mean of "
          f"{', '.join(record['shapes'])} at {args.threads} threads)"
          + (f"; the derived one {derived_result['score']:.0f}" if derived_result and
             derived_result.get("score") else ""))
    if args.dry_run:
        print("dry run: not stored")
        return 0
    from .store import write_atomic
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1, default=str))
    print(f"stored in {path}: every later process on this CPU compiles with it")
    return 0
