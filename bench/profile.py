"""`mnist-bench profile`: the timed training epochs under py-spy, with native frames.

The epochs run in a child Python process (``python -m bench.profile --child``)
started by ``py-spy record --native -- python ...``, so the profiler works
wherever it may trace its own children (no attach to a foreign pid). The child
trains a warm-up epoch (JIT compilation), times a second one, and then trains as
many epochs as give at least --min-samples samples at --rate inside
``profiled_epochs``; setup, data and warm-up are outside it.

One recording (speedscope JSON, whose frames carry their file apart from their
name) gives everything: the flamegraph SVG (drawn here, from the samples inside
``profiled_epochs`` only, rooted there), the speedscope file of those samples,
and the breakdown. Numba's JIT code has no symbols py-spy can read (it lives in
anonymous memory); the child lists the start address of every function Numba
compiled in it, and each such frame is named after the nearest start below it
(``module.function``, file ``numba-jit``); JIT code below every known start
(Numba's runtime helpers) stays an address. Torch and JAX run their kernels on pools of
their own, where py-spy sees the main thread waiting: for them the child also
trains one more epoch under the library's own profiler and writes its per-op
table.
"""
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

from .errors import UserError

PROFILED_FUNCTION = "profiled_epochs"
# a breakdown of fewer samples than this is printed with a warning
MIN_SAMPLES = 500
WARN_SAMPLES = 300
# most epochs the child trains to reach --min-samples
MAX_EPOCHS = 10_000

# Where a sample's time is charged, in the order the table shows them.
CATEGORIES = {
    "blas": "BLAS (OpenBLAS/MKL gemm and helpers)",
    "numba": "Numba-compiled code (JIT code, Numba runtime)",
    "numpy": "NumPy C loops (ufuncs, copies, allocation)",
    "torch": "torch dispatch and kernels (libtorch/ATen/c10)",
    "python": "Python interpreter (bytecode, objects)",
    "other": "other (libc, kernel, unresolved)",
}


class ProfilerUnavailable(UserError):
    """py-spy is missing or may not read the child process's memory."""


FIX_PERMISSIONS = ("py-spy may not read the child's memory. Run as root, or allow "
                   "tracing with `sudo sysctl kernel.yama.ptrace_scope=0`; in a container "
                   "start it with `--cap-add SYS_PTRACE`")


def add_arguments(parser):
    from .data import add_arguments as add_data_arguments
    parser.add_argument("--model", required=True, help="linear, nielsen, mlp or cnn")
    parser.add_argument("--backend", required=True, help="a backend name (see `mnist-bench list`)")
    add_data_arguments(parser)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N training images only (a shorter epoch)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="mini-batch size (default: the model's own)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (default 200)")
    parser.add_argument("--min-samples", type=int, default=MIN_SAMPLES,
                        help=f"train as many epochs as give at least this many samples in the "
                             f"profile (default {MIN_SAMPLES})")
    parser.add_argument("--out", default="results/profiles",
                        help="directory for the flamegraph, speedscope and breakdown files")
    parser.add_argument("--seed", type=int, default=0)


# -- the child: warm-up epoch, then the profiled one -----------------------------

def child_main(argv):
    import argparse

    from . import data

    parser = argparse.ArgumentParser(prog="python -m bench.profile --child")
    add_arguments(parser)
    parser.add_argument("--info", required=True, help="where to write the epoch's figures (JSON)")
    args = parser.parse_args(argv)
    try:
        run_child(args)
    except (UserError, data.DataError, ValueError) as e:
        # The parent turns this into its one-line error; py-spy's own output
        # would only say that the process exited.
        with open(args.info, "w") as f:
            json.dump({"error": str(e)}, f)
        sys.exit(2)


def run_child(args):
    import numpy as np

    from . import data
    from .backends import get_backend
    from ..models import config_for, get_network
    from ..models.train import epoch_batches, prepare_inputs, prepare_targets

    ds = data.load(args.dataset, args.data_dir, allow_download=not args.no_download,
                   log=lambda msg: print(msg, file=sys.stderr))
    network = get_network(args.model)
    config = config_for(network, {"batch_size": args.batch_size})
    x, labels = ds.train_x[:args.train_limit], ds.train_y[:args.train_limit]
    backend = get_backend(args.backend)
    trainer = backend.make_trainer(network, network.init_params(args.seed), config, args.seed)
    trainer.set_data(prepare_inputs(network, x), prepare_targets(network, labels))

    warmup_epoch(trainer, epoch_batches(len(x), config["batch_size"], args.seed, 0))
    start = time.perf_counter()
    warmup_epoch(trainer, epoch_batches(len(x), config["batch_size"], args.seed, 1))
    calibration_s = time.perf_counter() - start
    # epochs until the profiled time gives --min-samples at --rate, with a margin
    # for sampling jitter; their batch orders are made beforehand (twice as many as
    # the calibration epoch says) and reused in turn if the epochs run faster than
    # it did, so the profiled region holds training only
    wanted_s = 1.2 * args.min_samples / args.rate
    planned = max(1, min(MAX_EPOCHS, 2 * math.ceil(wanted_s / max(calibration_s, 1e-6))))
    epochs = [epoch_batches(len(x), config["batch_size"], args.seed, 2 + i) for i in range(planned)]
    start = time.perf_counter()
    loss, n_epochs = profiled_epochs(trainer, epochs, wanted_s)
    profiled_s = time.perf_counter() - start
    info = {"dataset": ds.describe(), "synthetic": ds.synthetic, "samples": len(x),
            "batch_size": config["batch_size"], "batches": len(epochs[0]), "epochs": n_epochs,
            "calibration_epoch_s": calibration_s, "profiled_s": profiled_s,
            "epoch_s": profiled_s / n_epochs, "loss": loss, "finite": bool(np.isfinite(loss)),
            "numba_loaded": "numba" in sys.modules, "numba_symbols": numba_symbols()}
    library = next((lib for lib in ("torch", "jax") if lib in backend.thread_libraries), None)
    if library:
        batches = epoch_batches(len(x), config["batch_size"], args.seed, 2 + n_epochs)
        try:
            info["ops"] = (torch_ops if library == "torch" else jax_ops)(trainer, batches)
        except Exception as e:  # the library's profiler is an extra: its failure is said, not fatal
            info["ops"] = {"library": library, "error": f"{type(e).__name__}: {e}"}
    with open(args.info, "w") as f:
        json.dump(info, f)


def warmup_epoch(trainer, batches):
    trainer.train_epoch(batches)
    trainer.synchronize()


def profiled_epochs(trainer, epochs, seconds=0.0):
    """The profiled region: every sample under this frame is the timed work.
    Trains the batch orders ``epochs`` in turn, from the first again when they run
    out, until ``seconds`` have passed (at least one epoch, at most MAX_EPOCHS);
    returns (the last loss, epochs trained)."""
    loss, start, done = None, time.perf_counter(), 0
    for batches in itertools.islice(itertools.cycle(epochs), MAX_EPOCHS):
        loss = trainer.train_epoch(batches)
        trainer.synchronize()
        done += 1
        if time.perf_counter() - start >= seconds:
            break
    return loss, done


def numba_symbols() -> list:
    """[start address, name] of every function Numba compiled in this process
    (each overload's entry point and C wrapper, named after the Python function;
    every function of a library compiled here rather than loaded from the cache,
    by its own name), sorted by address."""
    if "numba" not in sys.modules:
        return []
    from numba.core.dispatcher import Dispatcher

    from .measure import objects_of
    found = {}
    for dispatcher in objects_of(Dispatcher):
        for cres in list(dispatcher.overloads.values()):
            library, fndesc = cres.library, cres.fndesc
            # the code between one start and the next belongs to the same compiled
            # library: named after its function, module shortened to its last part
            name = f"{fndesc.modname.rpartition('.')[2]}.{fndesc.qualname}"
            named = {fndesc.llvm_func_name: name, fndesc.llvm_cpython_wrapper_name: name}
            module = getattr(library, "_final_module", None)  # empty when loaded from the cache
            for fn in (module.functions if module is not None else ()):
                if not fn.is_declaration:
                    named.setdefault(fn.name, demangle(fn.name))
            for symbol, label in named.items():
                try:
                    address = library.get_pointer_to_function(symbol)
                except Exception:  # a symbol the library did not keep
                    continue
                if address:
                    found[int(address)] = label
    return sorted(found.items())


def demangle(symbol) -> str:
    """Numba's Itanium-style names, "_ZN17mnist_numba_bench7kernels6matmul4packB..."
    -> "matmul.pack" (module shortened to its last part); others unchanged."""
    if not symbol.startswith("_ZN"):
        return symbol
    parts, i = [], 3
    while i < len(symbol) and symbol[i].isdigit():
        j = i
        while j < len(symbol) and symbol[j].isdigit():
            j += 1
        n = int(symbol[i:j])
        parts.append(symbol[j:j + n])
        i = j + n
    parts = [p.replace("_3c", "<").replace("_3e", ">").replace("_24", "$") for p in parts]
    return ".".join(parts[-2:]) or symbol


def torch_ops(trainer, batches, top=15) -> dict:
    """One epoch under torch.profiler: self CPU time per op."""
    import torch
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        profiled_epochs(trainer, [batches])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {"library": "torch", "profiler": "torch.profiler (self CPU time)",
            "total_s": total / 1e6,
            "ops": [{"op": e.key, "calls": e.count, "seconds": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total} for e in events[:top]]}


def jax_ops(trainer, batches, top=15) -> dict:
    """One epoch under jax.profiler, its Perfetto trace's XLA op events (those
    naming an ``hlo_op``) summed per compiled function and op."""
    import glob
    import gzip
    import tempfile

    import jax
    with tempfile.TemporaryDirectory(prefix="mnist-bench-jax-trace-") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            profiled_epochs(trainer, [batches])
        traces = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
        if not traces:
            raise RuntimeError("jax.profiler wrote no Perfetto trace")
        with gzip.open(traces[0], "rt") as f:
            doc = json.load(f)
    per_op, calls = Counter(), Counter()
    for event in doc.get("traceEvents", doc if isinstance(doc, list) else []):
        op = (event.get("args") or {}).get("hlo_op")
        if event.get("ph") == "X" and "dur" in event and op:
            name = f"{event['args'].get('hlo_module', '?')}: {op}"
            per_op[name] += event["dur"]
            calls[name] += 1
    total = sum(per_op.values()) or 1
    return {"library": "jax", "profiler": "jax.profiler (XLA op time, summed over threads)",
            "total_s": total / 1e6,
            "ops": [{"op": op, "calls": calls[op], "seconds": us / 1e6, "share": us / total}
                    for op, us in per_op.most_common(top)]}


# -- the parent: py-spy around the child, then the breakdown ----------------------

def find_py_spy():
    """py-spy next to this interpreter (a virtualenv not on PATH), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    found = beside if os.access(beside, os.X_OK) else shutil.which("py-spy")
    if not found:
        raise ProfilerUnavailable("py-spy is not installed: `pip install -e .[profile]` "
                                  "(or `pip install py-spy`)")
    return found


def record(py_spy, fmt, output, child_args, info_path, rate) -> dict:
    """One py-spy recording of a fresh child; returns the child's epoch figures,
    raises with the reason on failure."""
    env = dict(os.environ)
    # --idle keeps samples where the main thread waits on BLAS/Numba/torch worker
    # threads: those are part of the epoch's wall time.
    cmd = [py_spy, "record", "--native", "--idle", "--rate", str(rate), "--format", fmt,
           "--output", output, "--", sys.executable, "-m", __name__, "--child", *child_args]
    if os.path.exists(info_path):
        os.remove(info_path)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    epoch = {}
    if os.path.exists(info_path):
        with open(info_path) as f:
            epoch = json.load(f)
        os.remove(info_path)
    if "error" in epoch:
        raise UserError(epoch["error"])
    if proc.returncode != 0 or not os.path.exists(output) or not epoch:
        lowered = text.lower()
        if any(s in lowered for s in ("permission", "ptrace", "operation not permitted")):
            raise ProfilerUnavailable(f"py-spy cannot sample the process: {FIX_PERMISSIONS}")
        tail = [line for line in text.splitlines()
                if line.strip() and not line.startswith("py-spy>")][-1:] or ["no output"]
        raise UserError(f"profiling failed (py-spy exit status {proc.returncode}): {tail[0]}")
    return epoch


def classify(frames, numba_loaded=True):
    """The category of one sample, ``frames`` as (name, file) from root to leaf.

    The sample is charged to the leafmost frame that tells where the time is
    spent. libc/libm/loader and unresolved frames (memcpy, exp, malloc) belong
    to the native library that called them, so they are skipped while walking
    towards the root; reached straight from Python code (py-spy elides the
    interpreter's own frames there) they stay "other".
    """
    skipped = False
    for name, file in reversed(frames):
        lib = file.lower()
        if lib.endswith(".py") or lib.startswith("<frozen"):
            return "other" if skipped else "python"
        if lib == "numba-jit":  # named by resolver(): Numba's own code, whatever its name
            return "numba"
        if "blas" in lib or "mkl" in lib or "gemm" in name.lower():
            return "blas"
        if "torch" in lib or "libc10" in lib or "at::" in name or "c10::" in name:
            return "torch"
        # Numba's JIT code lives in anonymous memory: py-spy shows "0x... (?)".
        if (lib in ("?", "") and numba_loaded) or "numba" in lib or "_dispatcher" in lib:
            return "numba"
        if "numpy" in lib:
            return "numpy"
        base = os.path.basename(lib)
        if base.startswith(("libpython", "python")) or base.endswith((".c", ".h")):
            return "python"
        skipped = True
    return "other"


def resolver(symbols):
    """A function naming a frame (name, file): Numba's JIT frames, bare addresses
    in anonymous memory, after the nearest compiled function starting at or below
    them (``symbols``: the child's [address, name] list), file "numba-jit"."""
    import bisect
    starts = [a for a, _ in symbols]

    def resolve(name, file):
        if file not in ("?", "") or not starts:
            return name, file
        try:
            address = int(name.split()[0], 16)
        except (ValueError, IndexError):
            return name, file
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or address - starts[i] > NEAREST_LIMIT:
            return name, file
        return symbols[i][1], "numba-jit"
    return resolve


# a JIT frame further than this past the nearest known start stays an address
NEAREST_LIMIT = 1 << 20


def profiled_stacks(speedscope_path, symbols=()):
    """The samples inside PROFILED_FUNCTION: Counter of stacks, each a tuple of
    (name, file) from PROFILED_FUNCTION to the leaf, weighted in seconds; and the
    sampling interval."""
    with open(speedscope_path) as f:
        doc = json.load(f)
    resolve = resolver(symbols)
    frames = [resolve(fr["name"], fr.get("file") or "?") for fr in doc["shared"]["frames"]]
    stacks, interval = Counter(), None
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"]):
            named = [frames[i] for i in stack]
            root = next((k for k, (name, file) in enumerate(named) if name == PROFILED_FUNCTION
                         and file.endswith(os.path.join("bench", "profile.py"))), None)
            if root is None:
                continue
            interval = interval or weight
            stacks[tuple(named[root:])] += weight
    return stacks, interval


def breakdown(stacks, interval, numba_loaded=True, top=12):
    """Samples of the profiled epochs per category, and the hottest leaf frames."""
    per_category, leaves = Counter(), Counter()
    for stack, weight in stacks.items():
        category = classify(list(stack), numba_loaded)
        per_category[category] += weight
        name, file = stack[-1]
        leaves[(f"{name} ({os.path.basename(file)})", category)] += weight
    total = sum(per_category.values())
    if total == 0:
        raise UserError(f"no sample inside {PROFILED_FUNCTION}: the epochs were too short for "
                        f"the sampling rate (raise --rate or --min-samples)")
    return {
        "sampled_s": total,
        "samples": round(total / interval),
        "categories": {c: {"label": label, "seconds": per_category[c], "share": per_category[c] / total}
                       for c, label in CATEGORIES.items()},
        "top_frames": [{"frame": frame, "category": cat, "seconds": s, "share": s / total}
                       for (frame, cat), s in leaves.most_common(top)],
    }


def write_speedscope(stacks, path, name):
    """The profiled samples alone as a speedscope file (https://www.speedscope.app)."""
    index, frames, samples, weights = {}, [], [], []
    for stack, weight in stacks.items():
        ids = []
        for frame in stack:
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame[0], "file": frame[1]})
            ids.append(index[frame])
        samples.append(ids)
        weights.append(weight)
    total = sum(weights)
    doc = {"$schema": "https://www.speedscope.app/file-format-schema.json", "name": name,
           "shared": {"frames": frames},
           "profiles": [{"type": "sampled", "name": name, "unit": "seconds", "startValue": 0,
                         "endValue": total, "samples": samples, "weights": weights}]}
    from .store import write_atomic
    write_atomic(path, json.dumps(doc))


COLOURS = {"blas": "#e6a23c", "numba": "#4e8fd6", "numpy": "#63b363", "torch": "#d9534f",
           "python": "#b0b0b0", "other": "#d7c9a7"}


def flamegraph_svg(stacks, title, width=1200, row=17) -> str:
    """An icicle flamegraph (root on top) of ``stacks``: a box per frame, its
    width its share of the samples, coloured by where the time is charged
    (CATEGORIES), each with its full name and share on hover."""
    from html import escape
    tree = {"children": {}, "weight": 0.0}
    for stack, weight in stacks.items():
        node = tree
        node["weight"] += weight
        for frame in stack:
            node = node["children"].setdefault(frame, {"children": {}, "weight": 0.0})
            node["weight"] += weight
    total = tree["weight"] or 1
    boxes, depth_max = [], 0

    def lay(node, path, x, depth):
        nonlocal depth_max
        for frame, child in sorted(node["children"].items(), key=lambda kv: -kv[1]["weight"]):
            w = child["weight"] / total * width
            if w >= 0.5:
                depth_max = max(depth_max, depth)
                category = classify(path + [frame])
                boxes.append((x, depth, w, frame, child["weight"], category))
                lay(child, path + [frame], x, depth + 1)
            x += w
    lay(tree, [], 0.0, 0)
    height = (depth_max + 1) * row + 40
    out = [f'<?xml version="1.0" standalone="no"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" font-family="monospace" font-size="11">',
           f'<text x="4" y="16" font-size="13">{escape(title)}</text>']
    for x, depth, w, (name, file), weight, category in boxes:
        y = 26 + depth * row
        label = f"{name} ({os.path.basename(file)})"
        fits = int(w / 6.6)
        text = label if len(label) <= fits else (label[:fits - 2] + ".." if fits > 3 else "")
        out.append(f'<g><title>{escape(label)}: {weight / total:.1%} ({category})</title>'
                   f'<rect x="{x:.1f}" y="{y}" width="{max(w - 0.5, 0.5):.1f}" height="{row - 1}" '
                   f'fill="{COLOURS[category]}"/>'
                   + (f'<text x="{x + 2:.1f}" y="{y + row - 5}">{escape(text)}</text>' if text else "")
                   + "</g>")
    out.append("</svg>")
    return "\n".join(out)


def format_ops(ops, top=10) -> list:
    if not ops:
        return []
    if "error" in ops:
        return ["", f"  {ops['library']}'s own profiler failed: {ops['error']}"]
    lines = ["", f"  {ops['library']} per op, one more epoch under {ops['profiler']}:",
             f"  {'op':<58} {'calls':>7} {'seconds':>9} {'share':>7}"]
    for op in ops["ops"][:top]:
        lines.append(f"  {op['op'][:58]:<58} {op['calls']:>7} {op['seconds']:>9.4f} {op['share']:>7.1%}")
    return lines


def format_table(summary) -> str:
    info = summary["epoch"]
    lines = [f"{summary['model']} on {summary['backend']}: {info['epochs']} epochs of {info['samples']} "
             f"images (batch {info['batch_size']}, {info['batches']} steps each) after a warm-up "
             f"epoch; {info['epoch_s']:.4f} s an epoch under py-spy, {summary['samples']} samples "
             f"at {summary['rate_hz']} Hz",
             f"  data: {info['dataset']}", ""]
    if summary["samples"] < WARN_SAMPLES:
        lines += [f"  WARNING: only {summary['samples']} samples (fewer than {WARN_SAMPLES}): the "
                  f"shares below are rough; raise --min-samples or --rate", ""]
    lines.append(f"  {'where the time went':<50} {'seconds':>8} {'share':>7}")
    for cat in summary["categories"].values():
        lines.append(f"  {cat['label']:<50} {cat['seconds']:>8.3f} {cat['share']:>7.1%}")
    lines += ["", f"  {'hottest frames':<70} {'share':>7}"]
    for fr in summary["top_frames"]:
        lines.append(f"  {fr['frame'][:60]:<60} {fr['category']:>9} {fr['share']:>7.1%}")
    lines += format_ops(summary.get("ops"))
    lines += ["", "  py-spy samples Python threads: time in BLAS/Numba/torch/XLA worker threads "
                  "shows as the main thread waiting inside that library."]
    return "\n".join(lines)


def main(args):
    from .backends import get_backend
    from ..models import get_network
    get_network(args.model)  # unknown names: ValueError listing the known ones
    backend = get_backend(args.backend)
    ok, why = backend.available()
    if not ok:
        raise UserError(f"backend {args.backend!r} is unavailable here: {why}")
    ok, why = backend.supports(args.model)
    if not ok:
        raise UserError(f"backend {args.backend!r} does not train {args.model!r}: {why}")
    if args.rate <= 0:
        raise ValueError(f"--rate must be a positive number of samples per second, not {args.rate}")
    if args.min_samples <= 0:
        raise ValueError(f"--min-samples must be positive, not {args.min_samples}")
    if args.train_limit is not None and args.train_limit <= 0:
        raise ValueError(f"--train-limit must be positive, not {args.train_limit}")
    if args.batch_size is not None and args.batch_size < 0:
        raise ValueError(f"--batch-size must be 0 (full batch) or positive, not {args.batch_size}")
    from .errors import writable_dir
    writable_dir(args.out, "--out")
    py_spy = find_py_spy()

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"{args.model}-{args.backend}")
    info_path = stem + ".epoch.json"
    child_args = ["--model", args.model, "--backend", args.backend, "--dataset", args.dataset,
                  "--seed", str(args.seed), "--info", info_path, "--rate", str(args.rate),
                  "--min-samples", str(args.min_samples)]
    for flag, value in (("--data-dir", args.data_dir), ("--train-limit", args.train_limit),
                        ("--batch-size", args.batch_size)):
        if value is not None:
            child_args += [flag, str(value)]
    if args.no_download:
        child_args.append("--no-download")

    paths = {"flamegraph": stem + ".flamegraph.svg", "speedscope": stem + ".speedscope.json",
             "recording": stem + ".recording.speedscope.json"}
    print(f"profile: recording -> {paths['recording']}", file=sys.stderr)
    epoch = record(py_spy, "speedscope", paths["recording"], child_args, info_path, args.rate)
    stacks, interval = profiled_stacks(paths["recording"], epoch.pop("numba_symbols", []))
    ops = epoch.pop("ops", None)
    summary = {"model": args.model, "backend": args.backend, "rate_hz": args.rate,
               "epoch": epoch, "files": paths, **breakdown(stacks, interval, epoch["numba_loaded"])}
    if ops:
        summary["ops"] = ops
    title = (f"{args.model} on {args.backend}: {epoch['epochs']} profiled epochs, "
             f"{summary['samples']} samples at {args.rate} Hz (setup and warm-up left out)")
    from .store import write_atomic
    write_atomic(paths["flamegraph"], flamegraph_svg(stacks, title))
    write_speedscope(stacks, paths["speedscope"], title)
    write_atomic(stem + ".breakdown.json", json.dumps(summary, indent=2))
    print(format_table(summary))
    print(f"\nwrote {paths['flamegraph']}, {paths['speedscope']} (the profiled epochs; open in "
          f"https://www.speedscope.app), {paths['recording']} (the whole process), "
          f"{stem}.breakdown.json")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        import argparse
        p = argparse.ArgumentParser(prog="python -m bench.profile")
        add_arguments(p)
        sys.exit(main(p.parse_args()))
