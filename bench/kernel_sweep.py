"""`mnist-bench kernels`: the kernel-level sweep.

Every module of the kernels package that defines ``FAMILIES`` (a list of
kernels.family.KernelFamily) is found by itself, plus the modules named in
MNIST_BENCH_PLUGINS. Each version runs in a worker of its own library (numba,
numpy, torch, cuda) at the sweep's thread count, so no two libraries' thread
pools share a process. The sweep goes one group at a time -- one family, shape,
dtype and thread count -- and interleaves that group's versions in rounds
(bench/supervise.py), so the ratios between versions are paired.

In its worker each version is first checked against the family's float64
reference on the family's odd check shapes (1, 7, 33, 257 ...) and on the timed
shape, every output on its own; a version wrong on any of them is stored
invalid, never timed.
"""
import argparse
import importlib
import importlib.util
import os
import pkgutil
import sys
import time

from .backends import plugin_modules

PACKAGE = __package__.rpartition(".")[0]


def add_arguments(parser):
    parser.add_argument("--families", default=None,
                        help="comma-separated kernel families (default: all CPU families)")
    parser.add_argument("--versions", default=None,
                        help="comma-separated version names (default: every version)")
    parser.add_argument("--sizes", default=None,
                        help="keep only shapes whose largest dimension is one of these "
                             "(comma-separated integers)")
    parser.add_argument("--shapes", default=None,
                        help="time these shapes instead of the families' own, e.g. 1024x1024x1024")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default: each family's)")
    parser.add_argument("--threads", default=None,
                        help=f"comma-separated thread counts (default: {os.cpu_count()})")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds: timed samples per cell, one per round (default 10)")
    parser.add_argument("--repeats", type=int, dest="rounds", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown", "json"),
                        help="the answer printed at the end: a table (default), csv, markdown or json")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")
    parser.add_argument("--machine", default=None, metavar="NAME",
                        help="this machine's name in reports (default: CPU model, ISA and cores)")


def discover_families(package=f"{PACKAGE}.kernels") -> dict:
    """name -> KernelFamily over every module of ``package`` that has FAMILIES, and
    the plugin modules."""
    pkg = importlib.import_module(package)
    modules = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "family":
            continue
        try:
            modules.append(importlib.import_module(f"{package}.{info.name}"))
        except ImportError as e:  # e.g. a GPU module on a machine without its library
            print(f"kernels: skipping {package}.{info.name}: {e}", file=sys.stderr)
    families = {}
    for module in modules + plugin_modules():
        for family in getattr(module, "FAMILIES", ()):
            if family.name in families:
                raise ValueError(f"kernel family {family.name!r} is defined twice "
                                 f"(second time in {module.__name__})")
            families[family.name] = family
    return families


def parse_shape(text):
    try:
        shape = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--shapes: {text!r} is not like 1024x1024x1024") from None
    if any(d < 1 for d in shape):
        raise ValueError(f"--shapes: {text!r}: every dimension must be at least 1")
    return shape


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or of the whole machine."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(plan):
    """Refuse, before any work, a shape whose operands would not fit in memory (a
    worker allocates the inputs, the reference's float64 copies and the outputs)."""
    free = available_memory()
    for family, _, shapes, dtypes in plan:
        for shape in shapes:
            for dtype in dtypes:
                need = 4 * family.nbytes(shape, 8)  # float64 reference copies, inputs, outputs
                if need > 0.8 * free:
                    raise ValueError(f"--shapes {'x'.join(map(str, shape))}: {family.name} needs about "
                                     f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are available")


def select(families: dict, names, versions, sizes, shapes=None, dtypes=None, default_device="cpu"):
    """[(family, versions, shapes, dtypes)] to sweep; unknown names raise ValueError."""
    if names:
        unknown = [n for n in names if n not in families]
        if unknown:
            raise ValueError(f"unknown kernel family {unknown[0]!r}; choose from "
                             f"{', '.join(families) or '(none found in kernels/)'}")
        chosen = [families[n] for n in names]
    else:
        chosen = [f for f in families.values() if f.device == default_device]
    if versions:
        known = {v for f in chosen for v in f.versions}
        unknown = [v for v in versions if v not in known]
        if unknown:
            raise ValueError(f"unknown kernel version {unknown[0]!r}; choose from "
                             f"{', '.join(sorted(known))}")
    out = []
    for f in chosen:
        vs = [v for v in f.versions if not versions or v in versions]
        if shapes:
            wrong = [s for s in shapes if len(s) != len(f.sweep_shapes[0])]
            if wrong:
                raise ValueError(f"--shapes: {f.name} takes {len(f.sweep_shapes[0])} dimensions "
                                 f"(like {'x'.join(map(str, f.sweep_shapes[0]))}), got "
                                 f"{'x'.join(map(str, wrong[0]))}")
        fs = list(shapes) if shapes else [s for s in f.sweep_shapes if not sizes or max(s) in sizes]
        ds = [d for d in (dtypes or f.dtypes)]
        bad = [d for d in ds if d not in ("float32", "float64")]
        if bad:
            raise ValueError(f"--dtypes: {bad[0]!r} is not float32 or float64")
        if vs and fs and ds:
            out.append((f, vs, fs, ds))
    if not out:
        raise ValueError("no kernel version and shape matches --families/--versions/--sizes")
    return out


def cells_of(plan, threads) -> list:
    """Groups of cells: one group per family x dtype x shape x thread count."""
    groups = []
    for family, versions, shapes, dtypes in plan:
        for dtype in dtypes:
            for shape in shapes:
                for n in threads:
                    group = len(groups)
                    groups.append([{"kind": "kernel", "model": family.name, "backend": v,
                                    "library": family.versions[v].library,
                                    "device": family.device, "shape": list(shape),
                                    "dtype": dtype, "threads": n, "group": group}
                                   for v in versions])
    i = 0
    for group in groups:
        for cell in group:
            cell["id"], i = i, i + 1
    return groups


# -- the worker side -----------------------------------------------------------------

_families = None
_validated = {}
TIMED_SEED, AFTER_TIMING_SEED = 1, 2  # the checks draw their inputs from seed 0


def families():
    global _families
    if _families is None:
        _families = discover_families()
    return _families


def library_missing(library):
    if library in ("torch", "jax") and importlib.util.find_spec(library) is None:
        return f"{library} is not installed"
    return None


class KernelUnit:
    """One version of a family on one shape and dtype, in its library's worker."""

    def __init__(self, cell, family=None):
        self.cell = cell
        self.family = family or families()[cell["model"]]
        self.version = self.family.versions[cell["backend"]]
        self.shape, self.dtype = tuple(cell["shape"]), cell["dtype"]

    def setup(self) -> dict:
        from .backends import configure_threads
        from .measure import CpuTimer, CudaTimer, thread_mismatches, thread_pools
        fam, v = self.family, self.version
        ok, why = fam.available()
        why = None if ok else why
        why = why or library_missing(v.library)
        if not why and v.available:
            ok, why = v.available()
            why = None if ok else why
        if why:
            return {"status": "unavailable", "error": why}
        if fam.skip_timing(v.name, self.shape):
            return {"status": "unavailable",
                    "error": "not timed at this size: minutes per call (the family's skip_timing)"}
        configure_threads([v.library], self.cell["threads"])
        out = {}
        key = (fam.name, v.name, self.dtype)
        first = key not in _validated
        inputs = fam.inputs(self.shape, self.dtype)
        if first:  # the version's first call in this process: JIT compilation or cache load
            t0 = time.perf_counter()
            try:
                fam.call(v.name, tuple(a.copy() if hasattr(a, "copy") else a for a in inputs))
                out["compile"] = {"first_call_s": time.perf_counter() - t0,
                                  "measured_on": list(self.shape)}
            except Exception:
                pass  # left for the check to record
            _validated[key] = [fam.check(v.name, s, self.dtype) for s in fam.check_shapes]
        checks = _validated[key] + [fam.check(v.name, self.shape, self.dtype)]
        bad = next((c for c in checks if not c.ok), None)
        finite = [c.max_error for c in checks if c.max_error == c.max_error]
        out["validation"] = {"ok": bad is None, "shapes": len(checks),
                             "max_error": max(finite, default=None)}
        if bad is not None:
            return out | {"status": "invalid",
                          "error": f"wrong on shape {list(bad.shape)}: {bad.error}"}
        # timed on inputs the checks never used, and checked again after timing on others
        self.inputs = fam.to_device(fam.inputs(self.shape, self.dtype, seed=TIMED_SEED))
        self.timer = CudaTimer() if fam.device == "cuda" else CpuTimer()
        self.loops = self.timer.calibrate(self.call)
        pools = thread_pools()
        out["env"] = pools
        wrong = thread_mismatches(pools, self.cell["threads"])
        if wrong:
            return out | {"status": "error", "error": f"thread pools differ from the cell's "
                                                      f"{self.cell['threads']} threads: {'; '.join(wrong)}"}
        itemsize = 8 if self.dtype == "float64" else 4
        out.update(loops=self.loops, flops=float(fam.flops(self.shape)) or None,
                   bytes=float(fam.nbytes(self.shape, itemsize)) or None,
                   timer=self.timer.name)
        return out | {"status": "ready"}


    def call(self):
        self.version.fn(*self.inputs)

    def sample(self, index) -> dict:
        return {"seconds": self.timer(self.call, self.loops)}

    def finish(self) -> dict:
        check = self.family.check_timed(self.version.name, self.shape, self.dtype, self.inputs,
                                        seed=AFTER_TIMING_SEED)
        out = {"verification": {"ok": check.ok, "max_error": check.max_error,
                                "what": "one more call through the timed buffers, refilled"}}
        if not check.ok:
            out.update(status="invalid", error=f"wrong after timing (the buffers the timed calls "
                                               f"used, refilled with new inputs): {check.error}")
        return out


def finalize(cell):
    from .stats import NOISY_STEAL
    if cell.get("median_s"):
        if cell.get("flops"):
            cell["gflops"] = cell["flops"] / cell["median_s"] / 1e9
        if cell.get("bytes"):
            cell["gbytes_per_s"] = cell["bytes"] / cell["median_s"] / 1e9
    steal = (cell.get("noise") or {}).get("steal_max")
    if steal is not None and steal > NOISY_STEAL:
        cell["noisy"] = True
        cell["noisy_reason"] = f"up to {steal:.0%} of the CPU stolen by the hypervisor in a sample"


# -- the command ---------------------------------------------------------------------

def worker_key(cell):
    return cell["library"], cell["threads"], cell["device"]


def run_groups(groups, settings, results_dir, rounds):
    """Run kernel groups through the supervisor into one new results file."""
    from .store import RunWriter, default_header
    from .supervise import Progress, Supervisor, thread_env
    writer = RunWriter(results_dir, default_header(settings))
    total = sum(len(g) for g in groups)
    print(f"run {writer.run_id}: {total} kernel cells in {len(groups)} groups, {rounds} rounds "
          f"-> {writer.path}", file=sys.stderr)
    supervisor = Supervisor(worker_key, lambda key: thread_env(key[1]), writer.put, finalize,
                            rounds, seed=int(writer.run_id[-6:], 16))
    writer.header["settings"]["round_order_seed"] = supervisor.seed
    try:
        supervisor.run(groups, Progress(total, rounds))
        writer.close("complete")
    except KeyboardInterrupt:
        writer.close("interrupted")
        print(f"interrupted: {len(writer.cells)} cells kept in {writer.path}", file=sys.stderr)
        return writer, 130
    except BaseException:
        writer.close("failed")
        raise
    finally:
        supervisor.close()
    return writer, 0


def main(args):
    from .plan import csv, ints
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    names = csv(args.families, "families") if args.families is not None else None
    versions = csv(args.versions, "versions") if args.versions is not None else None
    sizes = ints(args.sizes, "sizes", 1) if args.sizes is not None else None
    shapes = [parse_shape(s) for s in csv(args.shapes, "shapes")] if args.shapes is not None else None
    dtypes = csv(args.dtypes, "dtypes") if args.dtypes is not None else None
    threads = ints(args.threads, "threads", 1) if args.threads is not None else [os.cpu_count()]
    if max(threads) > (os.cpu_count() or 1):
        raise ValueError(f"--threads {max(threads)}: this machine has {os.cpu_count()} cores")
    plan = select(discover_families(), names, versions, sizes, shapes, dtypes)
    check_memory(plan)
    from .errors import writable_dir  # last: a refused sweep leaves no directory behind
    writable_dir(os.path.join(args.results_dir, "runs"), "--results-dir")
    groups = cells_of(plan, threads)
    settings = {"families": [f.name for f, *_ in plan], "versions": versions, "sizes": sizes,
                "shapes": [list(s) for s in shapes] if shapes else None, "threads": threads,
                "rounds": args.rounds, "machine": args.machine}
    writer, status = run_groups(groups, settings, args.results_dir, args.rounds)
    counts = {}
    for c in writer.cells:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    from .report.console import kernel_rows, render_kernels
    rows = kernel_rows(writer.path)
    if rows:
        print(render_kernels(rows, args.format))
    print(f"results: {writer.path} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    return status
