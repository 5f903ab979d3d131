"""Compile times on equal terms for every backend that compiles, measured once per
code version x machine x backend x model and reused by later runs.

- cold: a fresh process whose compile caches (Numba's, Inductor's, JAX's: the
  directories its backend names in ``compile_caches``) are empty runs the cell's
  whole warm-up -- building the trainer, one optimizer step, one prediction --
  from the backend's import on;
- cache hit: a second fresh process does the same with those caches populated.

The figures are kept in ``<cache root>/compile-times.json`` under a key of the
code version (a hash of the suite's source and the compilers' versions), the
machine, the backend and the model; a run reuses them unless
``--measure-compile`` asks for new ones, and every cell says where its figures
came from. The caches the probes filled become the run's own (under
``<cache root>/compiled/<code version>/``), so the workers that follow load
what was just compiled instead of compiling it again.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ..models.cache import cache_root

PACKAGE = __package__.rpartition(".")[0]
SOURCES = ("models", "kernels", os.path.join("bench", "backends"))
COMPILERS = ("numba", "llvmlite", "torch", "jax", "jaxlib")
_MERGE = threading.Lock()


def code_version() -> str:
    """16 hex digits: the suite's kernel, model and backend source and the versions
    of the compilers that turn it into machine code."""
    import importlib.metadata
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for folder in SOURCES:
        for dirpath, _, files in sorted(os.walk(os.path.join(root, folder))):
            for f in sorted(files):
                if f.endswith(".py"):
                    h.update(f.encode())
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        h.update(fh.read())
    for dist in COMPILERS:
        try:
            h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


def compiled_dir(version=None) -> str:
    """The compile caches every worker of a run shares."""
    return os.path.join(cache_root(), "compiled", version or code_version())


def numba_index_broken(path) -> str:
    """Why a Numba cache index (.nbi) cannot be loaded, or '' when it can: Numba
    reads it as a pickled version followed by a pickled payload."""
    import pickle
    try:
        with open(path, "rb") as f:
            pickle.load(f)
            pickle.loads(f.read())
    except Exception as e:  # garbage, truncation, a foreign pickle
        return f"{type(e).__name__}: {e}"[:120]
    return ""


def heal_caches(base, log=print) -> list:
    """Move aside every compile cache under ``base`` that cannot be loaded (a Numba
    index that does not unpickle), so the workers compile afresh instead of
    failing their cells; returns what was moved, each said with a warning."""
    moved = []
    numba_dir = os.path.join(base, "numba")
    for root, _, files in os.walk(numba_dir):
        for f in files:
            if f.endswith(".nbi"):
                why = numba_index_broken(os.path.join(root, f))
                if why:
                    aside = f"{numba_dir}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                    os.replace(numba_dir, aside)
                    log(f"warning: {os.path.join(root, f)}: a broken Numba cache ({why}); the "
                        f"cache moved to {aside}, compiled again")
                    return [aside]
    return moved


def cache_env(backend, base) -> dict:
    """Environment variables that point ``backend``'s compile caches into ``base``."""
    return {var: os.path.join(base, sub) for var, sub in getattr(backend, "compile_caches", {}).items()}


def machine_key(machine: dict) -> str:
    return f"{machine.get('hostname')}|{machine.get('cpu_model')}|{machine.get('cores')}"


def probe(backend_name, model, batch_size, threads, env, overrides=None) -> float:
    """Seconds of one cell's warm-up in a fresh process with ``env``."""
    job = json.dumps({"backend": backend_name, "model": model, "batch_size": batch_size,
                      "threads": threads, "overrides": overrides or {}})
    from .supervise import die_with_parent
    run = subprocess.run([sys.executable, "-m", f"{PACKAGE}.bench.worker", "--compile-probe", job],
                         env=env, capture_output=True, text=True, timeout=1800,
                         preexec_fn=die_with_parent)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])[-300:]
        raise RuntimeError(f"compile probe of {backend_name}/{model} failed: {tail}")
    return float(lines[-1])


def measure(backend, backend_name, model, batch_size, threads, worker_env, overrides=None) -> dict:
    """Cold and cache-hit warm-up of one backend x model, then the probes' caches
    merged into the shared ones."""
    with tempfile.TemporaryDirectory(prefix="compile-probe-") as fresh:
        env = dict(worker_env, **cache_env(backend, fresh))
        cold = probe(backend_name, model, batch_size, threads, env, overrides)
        hit = probe(backend_name, model, batch_size, threads, env, overrides)
        shared = compiled_dir()
        with _MERGE:  # two probes may carry files of the same name
            for sub in getattr(backend, "compile_caches", {}).values():
                if os.path.isdir(os.path.join(fresh, sub)):
                    shutil.copytree(os.path.join(fresh, sub), os.path.join(shared, sub),
                                    dirs_exist_ok=True)
    return {"cold_s": cold, "cache_hit_s": hit}


class CompileTimes:
    """The stored figures: {key: {"cold_s", "cache_hit_s", "measured", "run_id", ...}}."""

    def __init__(self, path=None):
        self.path = path or os.path.join(cache_root(), "compile-times.json")
        self.records = self._read()

    def _read(self) -> dict:
        """The stored figures; a file that is not a JSON object of records is moved
        aside (``.corrupt``) with a warning, and the figures measured again."""
        try:
            with open(self.path, encoding="utf-8") as f:
                records = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            records = e
        if isinstance(records, dict) and all(isinstance(v, dict) for v in records.values()):
            return records
        aside = f"{self.path}.corrupt"
        try:
            os.replace(self.path, aside)
        except OSError:
            aside = "(could not move it aside)"
        print(f"warning: {self.path}: not a compile-times file; moved to {aside}, figures measured "
              f"again", file=sys.stderr)
        return {}

    @staticmethod
    def key(version, machine, backend, model, overrides=None):
        """Figures measured under --set overrides are keyed by them too."""
        extra = f"|{json.dumps(overrides, sort_keys=True)}" if overrides else ""
        return f"{version}|{machine_key(machine)}|{backend}|{model}{extra}"

    def get(self, key):
        return self.records.get(key)

    def put(self, key, record):
        """Store one record, merged under a lock with what other runs stored since
        this one read the file (two runs sharing the cache keep both's figures)."""
        import fcntl

        from .store import write_atomic
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # the file as it is now, this record on top: a key this run or another
            # stored before (--measure-compile measures stored figures again) is
            # replaced, every other run's figures are kept
            self.records = self._read()
            self.records[key] = record
            write_atomic(self.path, json.dumps(self.records, indent=1, sort_keys=True))


def figures(pairs, machine, run_id, worker_env_of, force=False, log=print, lanes=1,
            overrides=None) -> dict:
    """{(backend, model): compile record} for every pair whose backend compiles:
    stored figures of this code version on this machine, or new measurements.

    The probes run ``lanes`` at a time (`mnist-bench run --compile-probes`,
    default one: each compiler is single-threaded, but a probe's warm-up step
    runs on as many cores as its cell, so probes side by side would take cores
    from each other); the figures say how many ran at once."""
    from concurrent.futures import ThreadPoolExecutor
    from .backends import get_backend
    version = code_version()
    store = CompileTimes()
    out, todo = {}, []
    for backend_name, model, batch_size, threads in pairs:
        backend = get_backend(backend_name)
        if not getattr(backend, "compile_caches", None) or not backend.available()[0]:
            continue
        if not backend.supports(model)[0]:
            continue
        key = CompileTimes.key(version, machine, backend_name, model, overrides)
        record = None if force else store.get(key)
        if record is not None:
            out[backend_name, model] = dict(record, source="stored")
        else:
            todo.append((key, backend, backend_name, model, batch_size, threads))
    lanes = max(1, min(lanes, len(todo) or 1))

    def one(job):
        key, backend, backend_name, model, batch_size, threads = job
        log(f"compile: measuring {backend_name} / {model} (cold, then cache hit) ...")
        t0 = time.perf_counter()
        try:
            figures_ = measure(backend, backend_name, model, batch_size, threads,
                               worker_env_of(backend_name, threads), overrides)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            return job, {"error": str(e), "source": "failed"}
        log(f"compile: {backend_name} / {model}: cold {figures_['cold_s']:.1f} s, "
            f"cache hit {figures_['cache_hit_s']:.2f} s ({time.perf_counter() - t0:.0f} s)")
        return job, dict(figures_, code_version=version, run_id=run_id,
                         measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         threads=threads, batch_size=batch_size, probes_at_once=lanes)

    with ThreadPoolExecutor(lanes) as pool:
        for job, record in pool.map(one, todo):
            key, _, backend_name, model = job[:4]
            if record.get("source") == "failed":
                out[backend_name, model] = record
                continue
            store.put(key, record)
            out[backend_name, model] = dict(record, source="measured")
    return out
