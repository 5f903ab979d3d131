"""`mnist-bench profile`: one training epoch under py-spy, with native frames.

The epoch runs in a child Python process (``python -m bench.profile --child``)
started by ``py-spy record --native -- python ...``, so the profiler works
wherever it may trace its own children (no attach to a foreign pid). The child
first trains one warm-up epoch, so JIT compilation is not in the profiled one;
the profiled epoch is the subtree under ``profiled_epoch`` in the flamegraph,
and the breakdown counts only samples inside it.

py-spy writes one format per recording, so the child runs twice: once for the
flamegraph SVG, once for the speedscope JSON. The breakdown is read from the
speedscope file, whose frames carry their file (shared library or Python
source) separately from their name.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

from .errors import UserError

PROFILED_FUNCTION = "profiled_epoch"

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
    trainer = get_backend(args.backend).make_trainer(network, network.init_params(args.seed),
                                                     config, args.seed)
    trainer.set_data(prepare_inputs(network, x), prepare_targets(network, labels))

    start = time.perf_counter()
    warmup_epoch(trainer, epoch_batches(len(x), config["batch_size"], args.seed, 0))
    warmup_s = time.perf_counter() - start
    batches = epoch_batches(len(x), config["batch_size"], args.seed, 1)
    start = time.perf_counter()
    loss = profiled_epoch(trainer, batches)
    epoch_s = time.perf_counter() - start
    with open(args.info, "w") as f:
        json.dump({"dataset": ds.describe(), "synthetic": ds.synthetic, "samples": len(x),
                   "batch_size": config["batch_size"], "batches": len(batches),
                   "warmup_s": warmup_s, "epoch_s": epoch_s, "loss": loss,
                   "numba_loaded": "numba" in sys.modules, "finite": bool(np.isfinite(loss))}, f)


def warmup_epoch(trainer, batches):
    trainer.train_epoch(batches)
    trainer.synchronize()


def profiled_epoch(trainer, batches):
    loss = trainer.train_epoch(batches)
    trainer.synchronize()
    return loss


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


def breakdown(speedscope_path, numba_loaded=True, top=12):
    """Samples of the profiled epoch per category, and the hottest leaf frames."""
    with open(speedscope_path) as f:
        doc = json.load(f)
    frames = [(fr["name"], fr.get("file") or "?") for fr in doc["shared"]["frames"]]
    profiled = {i for i, (name, file) in enumerate(frames)
                if name == PROFILED_FUNCTION and file.endswith(os.path.join("bench", "profile.py"))}
    per_category, leaves = Counter(), Counter()
    interval = None
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"]):
            if not profiled.intersection(stack):
                continue
            interval = interval or weight
            resolved = [frames[i] for i in stack]
            category = classify(resolved, numba_loaded)
            per_category[category] += weight
            name, file = resolved[-1]
            leaves[(f"{name} ({os.path.basename(file)})", category)] += weight
    total = sum(per_category.values())
    if total == 0:
        raise UserError(f"{speedscope_path}: no sample inside {PROFILED_FUNCTION}; the epoch "
                        f"was too short for the sampling rate (raise --rate or --train-limit)")
    return {
        "sampled_s": total,
        "samples": round(total / interval),
        "categories": {c: {"label": label, "seconds": per_category[c], "share": per_category[c] / total}
                       for c, label in CATEGORIES.items()},
        "top_frames": [{"frame": frame, "category": cat, "seconds": s, "share": s / total}
                       for (frame, cat), s in leaves.most_common(top)],
    }


def format_table(summary) -> str:
    info = summary["epoch"]
    lines = [f"{summary['model']} on {summary['backend']}: one epoch of {info['samples']} samples "
             f"(batch {info['batch_size']}, {info['batches']} steps) after a warm-up epoch; "
             f"{info['epoch_s']:.3f} s under py-spy, {summary['samples']} samples at {summary['rate_hz']} Hz",
             f"  data: {info['dataset']}", "",
             f"  {'where the time went':<50} {'seconds':>8} {'share':>7}"]
    for cat in summary["categories"].values():
        lines.append(f"  {cat['label']:<50} {cat['seconds']:>8.3f} {cat['share']:>7.1%}")
    lines += ["", f"  {'hottest frames':<70} {'share':>7}"]
    for fr in summary["top_frames"]:
        lines.append(f"  {fr['frame'][:60]:<60} {fr['category']:>9} {fr['share']:>7.1%}")
    lines += ["", "  Only the main Python thread is sampled: time in BLAS/Numba/torch worker threads "
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
                  "--seed", str(args.seed), "--info", info_path]
    for flag, value in (("--data-dir", args.data_dir), ("--train-limit", args.train_limit),
                        ("--batch-size", args.batch_size)):
        if value is not None:
            child_args += [flag, str(value)]
    if args.no_download:
        child_args.append("--no-download")

    paths = {"flamegraph": stem + ".flamegraph.svg", "speedscope": stem + ".speedscope.json"}
    for fmt, path in paths.items():
        print(f"profile: recording {fmt} -> {path}", file=sys.stderr)
        epoch = record(py_spy, fmt, path, child_args, info_path, args.rate)

    summary = {"model": args.model, "backend": args.backend, "rate_hz": args.rate,
               "epoch": epoch, "files": paths,
               **breakdown(paths["speedscope"], epoch["numba_loaded"])}
    with open(stem + ".breakdown.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(format_table(summary))
    print(f"\nwrote {paths['flamegraph']}, {paths['speedscope']} (open in https://www.speedscope.app), "
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
