"""`mnist-bench kernels`: the kernel-level sweep. Every module of the ``kernels``
package that defines ``FAMILIES`` (a list of kernels.family.KernelFamily, each
with ``sweep_shapes`` and ``dtypes``) is swept: every version on every shape and
dtype, validated against the family's reference before anything of that version
is timed. A version wrong on any shape is stored invalid on all of them and
never timed. Each thread count runs in its own worker process (see
bench.harness), so Numba, BLAS and torch pools start with that many threads.
"""
import importlib
import os
import pkgutil
import sys
import time


def add_arguments(parser):
    parser.add_argument("--families", default=None,
                        help="comma-separated kernel families (default: all; see kernels/)")
    parser.add_argument("--versions", default=None,
                        help="comma-separated version names (default: every version)")
    parser.add_argument("--sizes", default=None,
                        help="keep only shapes whose largest dimension is one of these "
                             "(comma-separated integers)")
    parser.add_argument("--threads", default=None,
                        help=f"comma-separated thread counts (default: {os.cpu_count()})")
    parser.add_argument("--repeats", type=int, default=10, help="timed samples per cell")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")


def discover_families(package="kernels") -> dict:
    """name -> KernelFamily over every module of ``package`` that has FAMILIES."""
    pkg = importlib.import_module(package)
    families = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "family":
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
        except ImportError as e:  # e.g. a GPU module on a machine without its library
            print(f"kernels: skipping {package}.{info.name}: {e}", file=sys.stderr)
            continue
        for family in getattr(module, "FAMILIES", ()):
            if family.name in families:
                raise ValueError(f"kernel family {family.name!r} is defined twice "
                                 f"(second time in {module.__name__})")
            families[family.name] = family
    return families


def select(families: dict, names, versions, sizes) -> list:
    """[(family, versions, shapes)] to sweep; unknown names raise ValueError."""
    if names:
        unknown = [n for n in names if n not in families]
        if unknown:
            raise ValueError(f"unknown kernel family {unknown[0]!r}; choose from "
                             f"{', '.join(families) or '(none found in kernels/)'}")
    chosen = [families[n] for n in (names or families)]
    if versions:
        known = {v for f in chosen for v in f.versions}
        unknown = [v for v in versions if v not in known]
        if unknown:
            raise ValueError(f"unknown kernel version {unknown[0]!r}; choose from "
                             f"{', '.join(sorted(known))}")
    out = []
    for f in chosen:
        vs = [v for v in f.versions if not versions or v in versions]
        shapes = [tuple(s) for s in f.sweep_shapes if not sizes or max(s) in sizes]
        if vs and shapes:
            out.append((f, vs, shapes))
    if not out:
        raise ValueError("no kernel version and shape matches --families/--versions/--sizes")
    return out


def sweep_family(family, versions, shapes, threads, repeats):
    """Yield one cell per (version, dtype, shape): validated on every shape first."""
    from bench.machine import thread_settings
    from bench.stats import summarize
    base = {"kind": "kernel", "model": family.name, "threads": threads}
    ok, why = family.available()
    for version in versions:
        for dtype in family.dtypes:
            coords = [dict(base, backend=version, dtype=dtype, shape=list(s)) for s in shapes]
            if not ok:
                yield from (c | {"status": "unavailable", "error": why} for c in coords)
                continue
            skip = getattr(family, "skip_timing", lambda v, s: False)
            skipped = [c for c, s in zip(coords, shapes) if skip(version, s)]
            yield from (c | {"status": "unavailable",
                             "error": "not timed at this size: minutes per call (family.skip_timing)"}
                        for c in skipped)
            coords = [c for c in coords if c not in skipped]
            timed = [tuple(c["shape"]) for c in coords]
            if not timed:
                continue
            cold_s = first_call_seconds(family, version, timed[0], dtype)
            # Every timed shape, plus the family's odd-sized check shapes (1, 7, 33...)
            # that catch edge-handling bugs the round sweep sizes hide.
            checks = [family.check(version, s, dtype)
                      for s in [*timed, *map(tuple, getattr(family, "check_shapes", ()))]]
            bad = next((c for c in checks if not c.ok), None)
            validation = {"ok": bad is None, "shapes": len(checks),
                          "max_error": max((c.max_error for c in checks
                                            if c.max_error == c.max_error), default=None)}  # NaN: crashed
            if bad is not None:
                error = f"wrong on shape {list(bad.shape)}: {bad.error}"
                yield from (c | {"status": "invalid", "error": error, "validation": validation}
                            for c in coords)
                continue
            for cell, shape in zip(coords, timed):
                try:
                    t = family.time(version, shape, dtype, repeats)
                except Exception as e:  # a crash while timing is stored; the sweep goes on
                    yield cell | {"status": "error", "error": f"{type(e).__name__}: {e}",
                                  "validation": validation}
                    continue
                cell |= summarize(t.samples_s)
                yield cell | {
                    "status": "ok", "validation": validation, "samples_s": list(t.samples_s),
                    "compile": {"cold_s": cold_s, "measured_on": list(timed[0])},
                    "flops": t.flops or None, "bytes": t.bytes or None,
                    "gflops": t.flops / cell["median_s"] / 1e9 if t.flops else None,
                    "gbytes_per_s": t.bytes / cell["median_s"] / 1e9 if t.bytes else None,
                    "env": thread_settings()}


def first_call_seconds(family, version, shape, dtype):
    """The first call of a version in this process: JIT compilation included. Not a
    result, only the compile cost; a crash here is left to validation to record."""
    import numpy as np
    try:
        inputs = family.make_inputs(shape, np.dtype(dtype), np.random.default_rng(0))
        t0 = time.perf_counter()
        family.versions[version](*inputs)
        family.synchronize()
    except Exception:
        return None
    return time.perf_counter() - t0


def _csv(text):
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def main(args):
    from bench.harness import Progress, _ints, run_worker
    from bench.store import RunWriter, default_header
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    names, versions = _csv(args.families), _csv(args.versions)
    sizes = _ints(args.sizes, "sizes", 1) if args.sizes else None
    threads = _ints(args.threads, "threads", 1) if args.threads else [os.cpu_count()]
    plan = select(discover_families(), names, versions, sizes)
    total = sum(len(vs) * len(f.dtypes) * len(shapes) for f, vs, shapes in plan) * len(threads)
    settings = {"families": [f.name for f, _, _ in plan], "versions": versions, "sizes": sizes,
                "threads": threads, "repeats": args.repeats}
    writer = RunWriter(args.results_dir, default_header(settings))
    print(f"run {writer.run_id}: {total} kernel cells -> {writer.path}", file=sys.stderr)
    progress = Progress(total)
    def on_cell(cell):
        writer.add(cell)
        progress.update(cell)
    try:
        for n in threads:
            job = {"threads": n, "families": names, "versions": versions, "sizes": sizes,
                   "repeats": args.repeats}
            status, tail = run_worker("bench.kernel_sweep", job, on_cell)
            if status != 0:
                print(f"kernel worker ({n} threads) exited with status {status}: {tail}",
                      file=sys.stderr)
        writer.close("complete")
    except KeyboardInterrupt:
        writer.close("interrupted")
        print(f"interrupted: {len(writer.cells)} finished cells kept in {writer.path}",
              file=sys.stderr)
        return 130
    print(f"results: {writer.path} ({len(writer.cells)} cells)")
    return 0


def worker_main() -> int:
    import json
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter goes to stderr, never into the cell stream
    from bench.store import _json_safe
    try:
        job = json.load(sys.stdin)
        for family, versions, shapes in select(discover_families(), job["families"],
                                               job["versions"], job["sizes"]):
            for cell in sweep_family(family, versions, shapes, job["threads"], job["repeats"]):
                out.write(json.dumps(_json_safe(cell)) + "\n")
                out.flush()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(worker_main())
    sys.exit("usage: mnist-bench kernels ... (--worker mode is for the sweep itself)")
