"""`mnist-bench run`: sweep models x backends x batch sizes x threads x datasets.

The plan (bench/plan.py) is checked whole before any work; compile times come
from bench/compile_times.py (measured once per code version and machine, then
reused); the cells run on long-lived workers, one per backend and thread
count, in interleaved rounds (bench/supervise.py); every cell is validated
against the NumPy reference in its worker before it is timed (bench/epochs.py)
and rewritten into the results store after every round.
"""
import collections
import os
import shutil
import sys
import tempfile

from .plan import add_arguments, cells_of, plan, settings_of  # noqa: F401  (the CLI's hooks)

INTERNAL = ("data_file", "reference_dir")


def worker_key(cell):
    return cell["backend"], cell["threads"]


def main(args):
    return run_sweep(vars(args))


def run_sweep(options) -> int:
    """`mnist-bench run` with ``options`` by name (plan.DEFAULTS for the rest)."""
    import numpy as np

    from . import compile_times
    from .backends import get_backend
    from .epochs import finalize
    from .store import RunWriter, default_header
    from .supervise import Progress, Supervisor, thread_env
    sweep = plan(options)
    results_dir = sweep["results_dir"]
    remove_stale_tmpdirs()
    tmpdir = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")
    writer = supervisor = None
    try:
        data_files = {}
        for ds in sweep["datasets"]:
            n = sweep["train_limit"] or len(ds.train_x)
            data_files[ds.name] = os.path.join(tmpdir, f"{ds.name}.npz")
            np.savez(data_files[ds.name], train_x=ds.train_x[:n], train_y=ds.train_y[:n],
                     test_x=ds.test_x, test_y=ds.test_y)
        cells = cells_of(sweep, data_files)
        for cell in cells:  # the reference trajectories every backend of a setting shares
            cell["reference_dir"] = os.path.join(tmpdir, "reference")
        writer = RunWriter(results_dir, default_header(settings_of(sweep)))
        print(f"run {writer.run_id}: {len(cells)} cells, {sweep['rounds']} rounds -> {writer.path}",
              file=sys.stderr)
        shared = compile_times.compiled_dir()
        compile_times.heal_caches(shared, log=lambda m: print(m, file=sys.stderr))

        def env_of(key):
            backend, threads = key
            return thread_env(threads, compile_times.cache_env(get_backend(backend), shared))

        pairs = dict.fromkeys((c["backend"], c["model"], sweep["model_batch_sizes"][c["model"]],
                               c["threads"]) for c in cells)
        # the compile figures stay here, keyed by backend and model: workers never see them
        figures = compile_times.figures(pairs, writer.header["machine"], writer.run_id,
                                        lambda b, t: env_of((b, t)), sweep["measure_compile"],
                                        log=lambda m: print(m, file=sys.stderr),
                                        lanes=sweep["compile_probes"], overrides=sweep["overrides"])

        def store(cell):
            writer.put({k: v for k, v in cell.items() if k not in INTERNAL})

        def with_figures(cell):
            finalize(cell, figures.get((cell["backend"], cell["model"])))

        supervisor = Supervisor(worker_key, env_of, store, with_figures, sweep["rounds"],
                                seed=int(writer.run_id[-6:], 16), processes=sweep["processes"])
        writer.header["settings"]["round_order_seed"] = supervisor.seed
        supervisor.run([cells], Progress(len(cells), sweep["rounds"]))
        writer.close("complete")
    except KeyboardInterrupt:
        if writer:
            writer.close("interrupted")
            print(f"interrupted: {len(writer.cells)} cells kept in {writer.path}", file=sys.stderr)
        return 130
    except BaseException:
        if writer:
            writer.close("failed")
        raise
    finally:
        if supervisor:
            supervisor.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    counts = collections.Counter(c["status"] for c in writer.cells)
    from .report.console import answer_rows, render
    fmt = sweep.get("format") or "table"
    print(render(answer_rows(writer.path), fmt))
    print(f"results: {writer.path} ({', '.join(f'{n} {s}' for s, n in counts.items())})",
          file=sys.stdout if fmt == "table" else sys.stderr)
    if sweep["report"]:
        write_report([writer.path], sweep["report"])
    return 0


TMP_PREFIX = "mnist-bench-run-"


def remove_stale_tmpdirs():
    """The data copies of runs whose process is gone (SIGKILLed: no finally ran)."""
    import glob
    for path in glob.glob(os.path.join(tempfile.gettempdir(), TMP_PREFIX + "*")):
        pid = os.path.basename(path)[len(TMP_PREFIX):].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


def write_report(paths, out_dir):
    from .report import generate
    generate(paths, out_dir)
    print(f"report: {out_dir}")
