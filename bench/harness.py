"""`mnist-bench run`: sweep models x backends x batch sizes x threads x datasets.

Every cell is validated against the NumPy reference first (a cell that fails is
stored as invalid and never timed), then warmed up, then timed. Each
(backend, thread count) runs in its own worker process -- ``python -m
bench.harness --worker``, a JSON job on stdin, one JSON line per finished cell on
stdout -- with the BLAS/OpenMP/Numba thread variables set before anything is
imported, so no two libraries' thread pools ever share a process. The parent
writes each cell to the results store the moment it arrives.

Only the epoch loop itself is inside the timer: batch orders are drawn before
it starts, and the backend is synchronised before it stops.
"""
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
MODES = ("throughput", "tta")
VALIDATION_STEPS = 3
# The README's main job: every CPU backend on the two dense write-up networks, one
# epoch of a 10,000-image subset per sample -- a few minutes on 2 cores.
QUICK = dict(models="nielsen,mlp",
             backends="numpy-loop,numpy,numba,numba-parallel,numba-fused,torch",
             epochs=1, repeats=3, train_limit=10_000)


def add_arguments(parser):
    parser.add_argument("--models", default="nielsen,mlp", help="comma-separated (default nielsen,mlp)")
    parser.add_argument("--backends", default="numpy,numpy-loop",
                        help="comma-separated backend names (see `mnist-bench list`)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated; 0 = full batch (default: each model's own)")
    parser.add_argument("--threads", default=None,
                        help=f"comma-separated thread counts (default: {os.cpu_count()}, all cores)")
    parser.add_argument("--dataset", default="auto",
                        help="comma-separated: auto (default), mnist, fashion-mnist, synthetic")
    parser.add_argument("--data-dir", default=None, help="a directory with the four IDX files")
    parser.add_argument("--mode", choices=MODES, default="throughput",
                        help="throughput: time per epoch; tta: time to --target-accuracy")
    parser.add_argument("--epochs", type=int, default=None,
                        help="throughput: epochs per timed sample (default 1); "
                             "tta: most epochs per seed (default: the model's own)")
    parser.add_argument("--repeats", type=int, default=5, help="timed samples per cell (throughput)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated init/batch-order seeds (default 0; tta: 0,1,2,3,4)")
    parser.add_argument("--target-accuracy", type=float, default=0.90,
                        help="tta: test accuracy to reach (default 0.90)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyperparameter of every model (repeatable)")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the README's main job: {QUICK['models']} on "
                             f"{QUICK['backends']} (those available), {QUICK['train_limit']} "
                             f"training images, {QUICK['repeats']} repeats; then a report")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="write a report of this run into DIR (--quick: results/report)")


def _csv(text, kind):
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError(f"--{kind}: empty list")
    return items


def _ints(text, kind, minimum):
    try:
        values = [int(s) for s in _csv(text, kind)]
    except ValueError:
        raise ValueError(f"--{kind}: {text!r} is not a comma-separated list of integers") from None
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"--{kind}: {bad[0]} is below {minimum}")
    return values


def parse_overrides(pairs) -> dict:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def plan(args) -> dict:
    """Check every option and name, and load the datasets, before any work starts.
    Returns the sweep settings; raises ValueError/DataError with one clear line."""
    from bench.backends import REGISTRY
    from bench.data import load
    from models import NETWORKS, config_for, get_network
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        args.report = args.report or os.path.join(args.results_dir, "report")
    models = _csv(args.models, "models")
    for name in models:
        get_network(name)  # unknown name -> ValueError naming the known ones
    backends = _csv(args.backends, "backends")
    unknown = [b for b in backends if b not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(REGISTRY)}")
    overrides = parse_overrides(args.set)
    for name in models:
        config_for(get_network(name), overrides)  # unknown hyperparameter -> ValueError
    if args.mode == "throughput" and args.seeds and len(_csv(args.seeds, "seeds")) > 1:
        raise ValueError("several --seeds are for --mode tta; throughput cells use one seed")
    seeds = _ints(args.seeds or ("0,1,2,3,4" if args.mode == "tta" else "0"), "seeds", 0)
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if args.train_limit is not None and args.train_limit < 1:
        raise ValueError("--train-limit must be at least 1")
    if not 0 < args.target_accuracy <= 1:
        raise ValueError("--target-accuracy is a fraction in (0, 1]")
    check_possible(models, backends)
    datasets = []
    for name in _csv(args.dataset, "dataset") if not args.data_dir else [args.dataset]:
        ds = load(name, args.data_dir, log=lambda m: print(m, file=sys.stderr))
        if ds.synthetic:
            print(f"WARNING: dataset {ds.name} is SYNTHETIC: timings are meaningful, "
                  f"accuracies are not", file=sys.stderr)
        datasets.append(ds)
    return {"models": models, "backends": backends,
            "batch_sizes": (_ints(args.batch_sizes, "batch-sizes", 0) if args.batch_sizes
                            else None),
            "threads": _ints(args.threads, "threads", 1) if args.threads else [os.cpu_count()],
            "datasets": datasets, "mode": args.mode, "epochs": args.epochs,
            "repeats": args.repeats, "seeds": seeds, "target_accuracy": args.target_accuracy,
            "train_limit": args.train_limit, "overrides": overrides,
            "model_batch_sizes": {m: NETWORKS[m].defaults["batch_size"] for m in models}}


def check_possible(models, backends):
    """A sweep may hold combinations this machine cannot run (they are stored as
    unavailable, with the reason); a request of nothing but those is an error."""
    from bench.backends import get_backend
    impossible = []
    for b in backends:
        backend = get_backend(b)
        ok, why = backend.available()
        for m in models:
            if ok:
                fine, reason = backend.supports(m)
                if not fine:
                    impossible.append(f"{b} cannot train {m} ({reason})")
            else:
                impossible.append(f"{b} is unavailable ({why})")
    if len(impossible) == len(models) * len(backends):
        raise ValueError(f"nothing to run: {impossible[0]}"
                         + (f"; and {len(impossible) - 1} more" if len(impossible) > 1 else ""))
    for line in dict.fromkeys(impossible):
        print(f"note: {line}: stored as unavailable", file=sys.stderr)


def jobs_of(sweep: dict, data_files: dict) -> list:
    """One worker job per (dataset, backend, threads); each holds its cells."""
    jobs = []
    for ds in sweep["datasets"]:
        for backend in sweep["backends"]:
            for threads in sweep["threads"]:
                cells = [{"model": m, "batch_size": bs} for m in sweep["models"]
                         for bs in (sweep["batch_sizes"] or [sweep["model_batch_sizes"][m]])]
                jobs.append({"backend": backend, "threads": threads, "cells": cells,
                             "dataset": ds.name, "synthetic": ds.synthetic,
                             "data_file": data_files[ds.name], "mode": sweep["mode"],
                             "epochs": sweep["epochs"], "repeats": sweep["repeats"],
                             "seeds": sweep["seeds"], "target_accuracy": sweep["target_accuracy"],
                             "overrides": sweep["overrides"]})
    return jobs


def settings_of(sweep: dict) -> dict:
    """What goes in the run header: every option, datasets by name and size."""
    out = {k: v for k, v in sweep.items() if k != "datasets"}
    out["datasets"] = [{"name": d.name, "source": d.source, "synthetic": d.synthetic,
                        "train": len(d.train_x) if not sweep["train_limit"]
                        else min(sweep["train_limit"], len(d.train_x)),
                        "test": len(d.test_x), "notes": d.notes} for d in sweep["datasets"]]
    return out


# -- the parent: run workers, store cells, show progress -----------------------------

class Progress:
    """One line on stderr per finished cell: count, cell, result, elapsed and ETA."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, cell):
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        if cell["kind"] == "kernel":
            where = f"{cell['model']}.{cell['backend']:<28} {str(cell['shape']):<18} {cell['dtype']}"
            what = f"{cell.get('median_s', 0) * 1e6:10.1f} us/call"
        else:
            where = f"{cell['model']:<8} {cell['backend']:<15} bs={cell['batch_size']:<4}"
            what = f"{cell.get('median_s', 0) * 1e3:9.1f} ms/epoch"
        if cell["status"] != "ok":
            what = f"{cell['status'].upper()}: {cell.get('error', '')[:70]}"
        elif cell.get("noisy"):
            what += " (noisy)"
        print(f"[{self.done:>3}/{self.total}] {where} t={cell['threads']} {what}  "
              f"elapsed {elapsed:5.0f}s  ETA {eta:5.0f}s", file=sys.stderr, flush=True)


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_worker(module, job, on_line) -> tuple:
    """Run ``python -m <module> --worker`` with the job's thread count, feed it the
    job, hand each JSON line it prints to ``on_line``. Returns (exit status, the
    last lines of its stderr)."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen([sys.executable, "-m", module, "--worker"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                env=worker_env(job["threads"]), text=True, cwd=REPO_ROOT,
                                preexec_fn=_die_with_parent)
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                on_line(json.loads(line))
            proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        errors.seek(0)
        return proc.returncode, " | ".join(errors.read().strip().splitlines()[-3:])[-300:]


def run_job(job, on_cell):
    """One backend's worker; a worker that dies leaves its unfinished cells stored
    as status error with its last words."""
    finished = set()
    def on_line(cell):
        finished.add((cell["model"], cell["batch_size"]))
        on_cell(cell)
    status, tail = run_worker("bench.harness", job, on_line)
    if status != 0:
        for c in job["cells"]:
            if (c["model"], c["batch_size"]) not in finished:
                on_cell(base_cell(job, c) | {
                    "status": "error", "error": f"worker exited with status {status}: {tail}"})


def _die_with_parent():
    """Linux: the worker gets SIGKILL when the harness dies (even by SIGKILL), so a
    killed run leaves no orphan still burning the cores."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def base_cell(job, c) -> dict:
    return {"kind": "tta" if job["mode"] == "tta" else "epoch", "model": c["model"],
            "backend": job["backend"], "batch_size": c["batch_size"], "threads": job["threads"],
            "dataset": job["dataset"], "synthetic": job["synthetic"]}


def main(args):
    import numpy as np

    from bench.store import RunWriter, default_header
    sweep = plan(args)
    writer = None
    tmpdir = tempfile.mkdtemp(prefix="mnist-bench-")
    try:
        data_files = {}
        for ds in sweep["datasets"]:
            n = sweep["train_limit"] or len(ds.train_x)
            data_files[ds.name] = os.path.join(tmpdir, f"{ds.name}.npz")
            np.savez(data_files[ds.name], train_x=ds.train_x[:n], train_y=ds.train_y[:n],
                     test_x=ds.test_x, test_y=ds.test_y)
        jobs = jobs_of(sweep, data_files)
        writer = RunWriter(args.results_dir, default_header(settings_of(sweep)))
        print(f"run {writer.run_id}: {sum(len(j['cells']) for j in jobs)} cells -> {writer.path}",
              file=sys.stderr)
        progress = Progress(sum(len(j["cells"]) for j in jobs))
        def on_cell(cell):
            writer.add(cell)
            progress.update(cell)
        for job in jobs:
            run_job(job, on_cell)
        writer.close("complete")
    except KeyboardInterrupt:
        if writer:
            writer.close("interrupted")
            print(f"interrupted: {len(writer.cells)} finished cells kept in {writer.path}",
                  file=sys.stderr)
        return 130
    except Exception:
        if writer:
            writer.close("failed")
        raise
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    counts = collections.Counter(c["status"] for c in writer.cells)
    print(f"results: {writer.path} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    if args.report:
        write_report([writer.path], args.report)
    return 0


def write_report(paths, out_dir):
    try:
        from bench.report import generate
    except ImportError as e:
        print(f"no report written (bench.report cannot load: {e}); make one later with "
              f"`mnist-bench report {' '.join(paths)}`", file=sys.stderr)
        return
    generate(paths, out_dir)
    print(f"report: {out_dir}")


# -- the worker: one backend, one thread count, in its own process ------------------

def timed_epoch(trainer, batches) -> tuple:
    """(seconds, mean loss) of one epoch: nothing but the loop and the final sync."""
    t0 = time.perf_counter()
    loss = trainer.train_epoch(batches)
    trainer.synchronize()
    return time.perf_counter() - t0, loss


def measure_cell(job, c, data) -> dict:
    """Validate, warm up and time one cell; never raises for a bad backend."""
    from bench.backends import get_backend
    from bench.machine import thread_settings
    from bench.stats import mlperf_score, summarize
    from bench.validate import validate
    from models import config_for, get_network
    from models.train import accuracy, epoch_batches, prepare_inputs, prepare_targets
    cell = base_cell(job, c)
    backend = get_backend(job["backend"])
    ok, why = backend.available()
    if ok:
        ok, why = backend.supports(c["model"])
    if not ok:
        return cell | {"status": "unavailable", "error": why}
    backend.configure_threads(job["threads"])
    network = get_network(c["model"])
    config = config_for(network, job["overrides"])
    config["batch_size"] = c["batch_size"]
    seed = job["seeds"][0]
    cell |= {"seed": seed if job["mode"] == "throughput" else None, "config": config,
             "flops_per_sample": network.flops_per_sample()}
    first_step_s = first_step_seconds(backend, network, config, seed)
    check = validate(job["backend"], c["model"], steps=VALIDATION_STEPS,
                     batch_size=c["batch_size"] or None, seed=seed, overrides=job["overrides"])
    cell["validation"] = {"ok": check.ok, "max_error": check.max_error, "steps": check.steps}
    if not check.ok:
        return cell | {"status": "invalid", "error": check.error}
    x, y = prepare_inputs(network, data["train_x"]), prepare_targets(network, data["train_y"])
    n = len(x)
    try:
        load_before = os.getloadavg()[0]
        trainer = backend.make_trainer(network, network.init_params(seed), config, seed)
        trainer.set_data(x, y)
        warm_s, _ = timed_epoch(trainer, epoch_batches(n, c["batch_size"], seed, 0))
        # A backend that caches compiled code on disk measures its own cold compile
        # (fresh process, empty cache) and cache hit; our first step may be a hit.
        info = backend.compile_info()
        cell["compile"] = {"cold_s": info.get("cold_s", first_step_s),
                           "cold_source": "backend" if "cold_s" in info else "first_step",
                           "cache_hit_s": info.get("cache_hit_s"), "first_step_s": first_step_s,
                           "warmup_epoch_s": warm_s, "backend": info}
        if job["mode"] == "throughput":
            cell |= time_throughput(trainer, job, c, n, seed)
            cell["accuracy"] = accuracy(trainer, data["test_x"].reshape(
                (-1,) + tuple(network.input_shape)), data["test_y"])
        else:
            cell |= time_to_accuracy(backend, network, config, job, c, x, y, data)
            cell["score_s"] = mlperf_score([s["time_to_accuracy_s"] for s in cell["seeds"]])
    except Exception as e:  # a crash while timing: stored, the sweep goes on
        return cell | {"status": "error", "error": f"{type(e).__name__}: {e}"}
    # Other processes on the cores show up here (this worker itself adds up to
    # its thread count): a hint for reading noisy cells on a shared machine.
    cell["load_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    cell |= summarize(cell["samples_s"])
    cell["samples_per_s"] = n / cell["median_s"]
    cell["gflops"] = network.flops_per_sample() * n / cell["median_s"] / 1e9
    cell["train_samples"] = n
    cell["env"] = thread_settings()
    return cell | {"status": "ok"}


def first_step_seconds(backend, network, config, seed):
    """One optimizer step of a new trainer on the validation data. The first in this
    process carries the backend's JIT compilation (or its on-disk cache load), so it
    is timed apart, before validation and warm-up run the same code hot. A crash
    here is left for validation to record: None."""
    from bench.validate import run_steps, validation_data
    x, y, _ = validation_data(network, max(config["batch_size"], 1), seed)
    t0 = time.perf_counter()
    try:
        run_steps(backend, network, config, x, y, 1, seed)
    except Exception:
        return None
    return time.perf_counter() - t0


def time_throughput(trainer, job, c, n, seed) -> dict:
    """``repeats`` samples, each the time of ``epochs`` epochs divided by epochs."""
    from models.train import epoch_batches
    epochs = job["epochs"] or 1
    samples, loss, epoch = [], None, 1
    for _ in range(job["repeats"]):
        total = 0.0
        for _ in range(epochs):
            batches = epoch_batches(n, c["batch_size"], seed, epoch)
            seconds, loss = timed_epoch(trainer, batches)
            total += seconds
            epoch += 1
        samples.append(total / epochs)
    return {"samples_s": samples, "loss": loss, "epochs": epochs, "repeats": job["repeats"]}


def time_to_accuracy(backend, network, config, job, c, x, y, data) -> dict:
    """Per seed: train from that seed's init until the test accuracy reaches the
    target, the clock running through training and evaluation alike."""
    from models.train import accuracy, epoch_batches
    test_x = data["test_x"].reshape((-1,) + tuple(network.input_shape))
    max_epochs = job["epochs"] or config["epochs"]
    seeds, epoch_times = [], []
    for seed in job["seeds"]:
        trainer = backend.make_trainer(network, network.init_params(seed), config, seed)
        trainer.set_data(x, y)
        elapsed, log, reached = 0.0, [], None
        for epoch in range(max_epochs):
            batches = epoch_batches(len(x), c["batch_size"], seed, epoch)
            train_s, loss = timed_epoch(trainer, batches)
            t0 = time.perf_counter()
            acc = accuracy(trainer, test_x, data["test_y"])
            eval_s = time.perf_counter() - t0
            elapsed += train_s + eval_s
            epoch_times.append(train_s)
            log.append({"epoch": epoch + 1, "loss": loss, "accuracy": acc, "train_s": train_s,
                        "eval_s": eval_s, "elapsed_s": elapsed})
            if acc >= job["target_accuracy"]:
                reached = elapsed
                break
        seeds.append({"seed": seed, "time_to_accuracy_s": reached, "epochs": len(log),
                      "final_accuracy": log[-1]["accuracy"], "epoch_log": log})
    return {"samples_s": epoch_times, "seeds": seeds, "target_accuracy": job["target_accuracy"],
            "accuracy": seeds[-1]["final_accuracy"], "loss": seeds[-1]["epoch_log"][-1]["loss"]}


def worker_main() -> int:
    """Read one job from stdin, write one JSON line per cell to the real stdout.
    Anything a library prints goes to stderr instead, so it cannot corrupt the stream."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        import numpy as np
        job = json.load(sys.stdin)
        with np.load(job["data_file"]) as z:
            data = {k: z[k] for k in z.files}
        for c in job["cells"]:
            out.write(json.dumps(_plain(measure_cell(job, c, data))) + "\n")
            out.flush()
    except KeyboardInterrupt:  # the parent handles Ctrl-C; die quietly
        return 130
    return 0


def _plain(value):
    """JSON-ready: NumPy scalars to Python numbers, NaN to null."""
    from bench.store import _json_safe
    return _json_safe(value)


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(worker_main())
    sys.exit("usage: mnist-bench run ... (this module's --worker mode is for the harness itself)")
