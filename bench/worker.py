"""The worker process: one backend (epoch cells) or one kernel library (kernel
cells) at one thread count, for a whole sweep.

    python -m mnist_numba_bench.bench.worker          # JSON commands on stdin

The parent (bench/supervise.py) starts it with the thread variables of its
thread count already set, so every pool the process creates has that size, and
sends one JSON command per line; the worker answers each with one JSON line:

    {"op": "setup", "id": 3, "cell": {...}}   -> {"status": "ready" | "invalid" | ...}
    {"op": "sample", "id": 3, "index": 0}     -> {"seconds": ..., ...}
    {"op": "finish", "id": 3}                 -> {...}: what the cell adds at the end
    {"op": "quit"}

Between commands the worker blocks reading its stdin (and the parent stops it
with SIGSTOP), so while another worker times a sample this one uses no CPU.
Anything a library prints goes to stderr, never into the reply stream.
Every worker computes with subnormal floats flushed to zero, the way XLA does
(bench/fpenv.py), so no backend pays for gradual underflow that another skips.

    python -m mnist_numba_bench.bench.worker --compile-probe '{"backend": ..., "model": ...}'

prints the seconds of one cell's warm-up in this fresh process (bench/compile_times.py).
"""
import json
import os
import sys
import time


def unit_for(cell):
    if cell["kind"] in ("epoch", "tta"):
        from .epochs import UNITS
        return UNITS[cell["kind"]](cell)
    if cell["kind"] == "kernel":
        from .kernel_sweep import KernelUnit
        return KernelUnit(cell)
    raise ValueError(f"unknown cell kind {cell['kind']!r}")


def handle(units: dict, cmd: dict, make_unit=unit_for) -> dict:
    """One command (setup, sample, finish) on the units of this worker: the one
    validate-then-time path, whether the worker is a process of its own
    (``serve``) or the caller's (bench.supervise.LocalWorker)."""
    op = cmd.get("op")
    try:
        if op == "setup":
            unit = make_unit(cmd["cell"])
            answer = unit.setup()
            if answer.get("status") == "ready":
                units[cmd["id"]] = unit
        elif op == "sample":
            answer = units[cmd["id"]].sample(cmd["index"])
        elif op == "finish":
            answer = units.pop(cmd["id"]).finish()
        else:
            raise ValueError(f"unknown command {op!r}")
    except Exception as e:  # a crash is the cell's error, the worker goes on
        units.pop(cmd.get("id"), None)
        answer = {"status": "error", "error": f"{type(e).__name__}: {e}"}
    return answer


def serve(commands, reply):
    units = {}
    for line in commands:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            return
        reply(handle(units, cmd))


def compile_probe(job) -> float:
    """One cell's whole warm-up, from the backend's import: build a trainer, one
    optimizer step, one prediction. Returns its seconds."""
    t0 = time.perf_counter()
    from ..models import config_for, get_network
    from .backends import get_backend
    from .validate import run_steps, validation_data
    from .measure import freeze_heap
    backend = get_backend(job["backend"])
    backend.configure_threads(job["threads"])
    freeze_heap()  # as the run's cells do before their first step (bench/epochs.py)
    network = get_network(job["model"])
    config = config_for(network, job.get("overrides"))
    config["batch_size"] = job.get("batch_size") or 0
    x, y, _ = validation_data(network, max(config["batch_size"], 8))
    run_steps(backend, network, config, x, y, 1).predict(x[:4])
    return time.perf_counter() - t0


def main(argv=None) -> int:
    # before any import that starts a thread pool, which then inherits it
    from .fpenv import flush_subnormals
    flush_subnormals()
    from .store import json_safe
    argv = sys.argv[1:] if argv is None else argv
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter goes to stderr, never into the reply stream
    try:
        if argv[:1] == ["--compile-probe"]:
            out.write(f"{compile_probe(json.loads(argv[1]))}\n")
            out.flush()
            return 0

        def reply(answer):
            out.write(json.dumps(json_safe(answer)) + "\n")
            out.flush()
        serve(sys.stdin, reply)
    except KeyboardInterrupt:  # the parent handles Ctrl-C; die quietly
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
