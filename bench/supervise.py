"""The parent side of every sweep: long-lived worker processes, and the rounds that
interleave their samples.

Each worker (bench/worker.py) hosts one backend or kernel library at one thread
count, for the whole sweep, so thread pools of different libraries never share
a process. A sweep runs in groups of cells (all of an epoch sweep; one kernel
shape at a time in a kernel sweep):

1. setup: every cell of the group is validated and warmed up in its worker --
   several workers at once, as many as the cores hold at the cells' thread count
   (spinning thread pools of two workers on one core slow both many times over);
   a cell that fails is stored
   at once (invalid, unavailable, error) and never timed;
2. rounds: in each round every ready cell gives one sample, in an order shuffled
   afresh each round (seeded, and recorded). Only the sampling worker runs: the
   others are stopped (SIGSTOP), so no idle thread pool spins on a core, and the
   CPU time they used during each sample is read back and stored (it is 0);
   drift of the machine that hits a round hits every cell of it, which is what
   makes per-round ratios between two cells (bench/stats.paired_ratio) paired;
3. finish: each cell adds its end-of-run figures (accuracy) and its summary.

Every cell is rewritten into the results store after every round, so a run
that is interrupted or killed keeps every sample it had finished.
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .machine import THREAD_VARS
from .measure import Noise, descheduled, summarize_noise
from .stats import summarize

PACKAGE = __package__.rpartition(".")[0]


MAX_RETAKES = 3
# the most timed rounds a --benchmark-max-time may ask for
MAX_ROUNDS = 1000
# what summarize() and the finalize()s derive from a cell's samples
SUMMARY_KEYS = ("median_s", "iqr_s", "min_s", "mean_s", "ci_low_s", "ci_high_s", "ci_coverage",
                "noisy", "samples_per_s", "gflops", "gbytes_per_s")


class WorkerDied(RuntimeError):
    pass


def thread_env(threads, extra=None) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.update(extra or {})
    return env


def die_with_parent():
    """Linux: the worker gets SIGKILL when the parent dies (even by SIGKILL), so a
    killed run leaves no orphan burning the cores; SIGINT at its default, so a
    worker started from a background shell still stops on Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


class Worker:
    def __init__(self, key, env):
        self.key = key
        self._errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", f"{PACKAGE}.bench.worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._errors, env=env, text=True, bufsize=1,
                                     preexec_fn=die_with_parent)
        self.paused = False
        self.lock = threading.Lock()

    @property
    def pid(self):
        return self.proc.pid

    def request(self, command) -> dict:
        with self.lock:
            self.resume()
            try:
                self.proc.stdin.write(json.dumps(command) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                self.proc.wait()
                raise WorkerDied(f"worker {self.key} exited with status {self.proc.returncode}: "
                                 f"{self.last_words()}")
            return json.loads(line)

    def pause(self):
        if not self.paused and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.paused and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def last_words(self) -> str:
        self._errors.flush()
        self._errors.seek(0)
        return " | ".join(self._errors.read().strip().splitlines()[-3:])[-300:]

    def close(self):
        try:
            self.resume()
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._errors.close()


class LocalWorker:
    """A worker in this process, for units whose code exists only here (`mnist-bench
    tune`'s candidates, compiled in this process): the same commands through the
    same handler (bench.worker.handle), nothing to stop between samples."""

    def __init__(self, key, make_unit, threads):
        from .backends import configure_threads
        self.key, self.make_unit, self.units, self.threads = key, make_unit, {}, threads
        self.pid = os.getpid()
        # the pools this process has of its own (Numba's, and torch's where torch is
        # loaded) sized now, as a worker's are, and given back on close; Numba's
        # threading layer starts here (with its OpenMP runtime where that is the
        # layer), so the BLAS/OpenMP limits of every request reach it
        import numba
        self._before = {"numba": numba.get_num_threads()}
        if "torch" in sys.modules:
            self._before["torch"] = sys.modules["torch"].get_num_threads()
        configure_threads(list(self._before), threads)

    def request(self, command) -> dict:
        """As a worker process answers, with every pool of this process (those a
        command loads included) limited to the worker's thread count."""
        from threadpoolctl import threadpool_limits

        from .store import json_safe
        from .worker import handle
        with threadpool_limits(limits=self.threads):
            answer = handle(self.units, command, self.make_unit)
        return json.loads(json.dumps(json_safe(answer)))

    def pause(self):
        pass

    def resume(self):
        pass

    def close(self):
        from .backends import configure_threads
        self.units.clear()
        for library, n in self._before.items():
            configure_threads([library], n)


def pending(cell) -> dict:
    """How a cell still in its rounds is stored: its samples so far, its status
    ``unverified`` until the timed work has been checked (finish), so a run that is
    killed or interrupted keeps every finished round without calling any of it
    verified."""
    return dict(cell, status="unverified",
                error="timed, not yet verified: the run stopped before its timed work was checked")


class Progress:
    """One line on stderr per finished setup and per round, with elapsed time and ETA."""

    def __init__(self, total_cells, rounds):
        self.total, self.rounds, self.start = total_cells, rounds, time.perf_counter()
        self.set_up = 0

    def line(self, text, eta=None):
        elapsed = time.perf_counter() - self.start
        tail = f"  elapsed {elapsed:5.0f}s" + (f"  ETA {eta:5.0f}s" if eta is not None else "")
        print(f"{text}{tail}", file=sys.stderr, flush=True)

    def setup(self, cell):
        self.set_up += 1
        what = cell["status"]
        if what == "ready":
            warm = (cell.get("compile") or {}).get("warmup_epoch_s")
            what = "ready" + (f" (warm-up epoch {warm:.3g} s)" if warm else "")
        else:
            what = f"{what.upper()}: {(cell.get('error') or '')[:90]}"
        self.line(f"[setup {self.set_up:>3}/{self.total}] {describe(cell)}: {what}")


def describe(cell) -> str:
    if cell["kind"] == "kernel":
        return (f"{cell['model']}.{cell['backend']} {'x'.join(map(str, cell['shape']))} "
                f"{cell['dtype']} t={cell['threads']}")
    bs = cell["batch_size"] or "full"
    return f"{cell['model']} {cell['backend']} bs={bs} t={cell['threads']}"


class Supervisor:
    """Runs groups of cells on workers keyed by ``worker_key(cell)``; ``env_of(key)``
    gives a new worker's environment; ``store(cell)`` writes a cell (replacing an
    earlier version of it); ``finalize(cell)`` adds its derived figures."""

    def __init__(self, worker_key, env_of, store, finalize, rounds, seed=0, parallel_setup=None,
                 processes=1, make_worker=None, max_time=None, warmup_rounds=0):
        self.worker_key, self.env_of, self.store, self.finalize = worker_key, env_of, store, finalize
        self.make_worker = make_worker or (lambda key: Worker(key, self.env_of(key)))
        self.rounds, self.seed = rounds, seed
        # pytest-benchmark's --benchmark-max-time and --benchmark-warmup: rounds
        # go on past ``rounds`` until the timed ones took ``max_time`` seconds (at
        # most MAX_ROUNDS); ``warmup_rounds`` rounds come first and are set aside
        # (``warmup_samples_s``), in every cell alike, so rounds stay paired
        self.max_time, self.warmup_rounds = max_time, warmup_rounds
        self.parallel_setup = parallel_setup
        self.processes = max(1, min(processes, rounds))
        self.workers = {}

    def worker(self, key) -> Worker:
        if key not in self.workers:
            self.workers[key] = self.make_worker(key)
        return self.workers[key]

    def close(self):
        for w in self.workers.values():
            w.close()
        self.workers.clear()

    # -- the three phases -----------------------------------------------------------
    def run(self, groups, progress):
        order_seed = random.Random(self.seed)
        for group in groups:
            ready = self.setup(group, progress)
            self.sample(ready, progress, random.Random(order_seed.random()))
            self.finish(ready, progress)

    def setup(self, cells, progress, again=False) -> list:
        """Set every cell up in its worker; ``again``: in a fresh worker, for the next
        share of the rounds (the cell keeps its first setup's figures; a failure
        now makes it an error)."""
        if not cells:
            return []
        by_worker = {}
        for cell in cells:
            by_worker.setdefault(self.worker_key(cell), []).append(cell)
        lanes = self.parallel_setup or max(
            1, (os.cpu_count() or 1) // max(int(c.get("threads") or 1) for c in cells))
        ready, lock, gate = [], threading.Lock(), threading.Semaphore(lanes)
        # Started from this thread: PR_SET_PDEATHSIG fires when the *thread* that
        # started a child exits, which a setup thread does at once.
        for key in by_worker:
            self.worker(key)

        def set_up(key, todo):
            with gate:
                w = self.worker(key)
                for cell in todo:
                    try:
                        answer = w.request({"op": "setup", "id": cell["id"], "cell": cell})
                    except WorkerDied as e:
                        answer = {"status": "error", "error": str(e)}
                    if again:
                        with lock:
                            if answer.get("status") == "ready":
                                ready.append(cell)
                            else:
                                cell.update(status="error", error="setup in a fresh worker failed: " +
                                            str(answer.get("error") or answer.get("status")))
                                self.store(cell)
                        continue
                    cell.update(answer)
                    with lock:
                        if cell["status"] == "ready":
                            ready.append(cell)
                        else:
                            self.store(cell)
                        progress.setup(cell)
                w.pause()

        threads = [threading.Thread(target=set_up, args=item, daemon=True) for item in by_worker.items()]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # a short join keeps Ctrl-C deliverable to this thread
        return sorted(ready, key=lambda c: c["id"])

    def sample(self, cells, progress, rng):
        for cell in cells:
            cell.update(samples_s=[], noise_samples=[], rounds=self.rounds, rounds_done=0,
                        status="ok", retaken=0)
        # The rounds are shared among `processes` generations of workers: a worker
        # process can run a few per cent faster or slower than the next one for
        # its whole life (memory placement), which more rounds in one process
        # never average out, while the median of per-round ratios does.
        warm = self.warmup_rounds
        fresh = {warm + round(g * self.rounds / self.processes) for g in range(1, self.processes)}
        r, timed_s = 0, 0.0
        while r < warm + self.rounds or (self.max_time and timed_s < self.max_time
                                         and r < warm + MAX_ROUNDS):
            if r in fresh:
                self.respawn(cells, progress, r)
            t0 = time.perf_counter()
            order = list(cells)
            rng.shuffle(order)
            for cell in order:
                if cell["status"] != "ok":
                    continue
                answer, reading = self.take(cell, r)
                if answer.get("status") == "error":
                    cell.update(status="error", error=answer["error"])
                    self.store(cell)
                    continue
                cell["samples_s"].append(answer.pop("seconds"))
                cell["noise_samples"].append(reading)
                for key, value in answer.items():
                    if key == "seed":
                        cell.setdefault("seeds", []).append(value)
                    else:
                        cell[key] = value
            for cell in cells:
                if cell["status"] != "ok":
                    continue
                if r + 1 == warm:  # the warm-up rounds end: their samples set aside
                    cell["warmup_samples_s"], cell["samples_s"] = cell["samples_s"], []
                    cell["noise_samples"] = []
                    continue
                if r >= warm:
                    cell["rounds_done"] = r + 1 - warm
                    cell["rounds"] = max(self.rounds, cell["rounds_done"])
                    self.summarize(cell)
                    self.store(pending(cell))
            took = time.perf_counter() - t0
            timed_s += took if r >= warm else 0.0
            label = f"warm-up {r + 1}/{warm}" if r < warm else f"round {r + 1 - warm:>2}/{self.rounds}"
            progress.line(f"[{label}] {len(order)} cells, {took:.1f} s",
                          eta=took * max(0, warm + self.rounds - r - 1))
            r += 1

    def take(self, cell, index):
        """One sample of ``cell``: (the worker's answer, its noise reading). A sample
        during which the worker was descheduled is taken again, up to MAX_RETAKES
        times; the count and the discarded times are kept in the cell."""
        w = self.worker(self.worker_key(cell))
        for attempt in range(MAX_RETAKES + 1):
            noise = Noise(watch=[o.pid for o in self.workers.values() if o is not w], target=w.pid)
            noise.start()
            try:
                answer = w.request({"op": "sample", "id": cell["id"], "index": index})
            except WorkerDied as e:
                answer = {"status": "error", "error": str(e)}
            reading = noise.stop()
            w.pause()
            why = descheduled(reading)
            if answer.get("status") == "error" or not why or attempt == MAX_RETAKES:
                if why:
                    reading["kept_descheduled"] = why
                return answer, reading
            cell["retaken"] = cell.get("retaken", 0) + 1
            cell.setdefault("retaken_s", []).append(answer.get("seconds"))
            cell.setdefault("retaken_why", []).append(why)

    def respawn(self, cells, progress, first_round):
        """Every worker replaced by a fresh process, and the cells still timed set
        up in it again."""
        live = [c for c in cells if c["status"] == "ok"]
        if not live:
            return
        t0 = time.perf_counter()
        self.close()
        ready = {c["id"] for c in self.setup(live, progress, again=True)}
        for cell in live:
            if cell["id"] in ready:
                cell.setdefault("worker_processes", [0]).append(first_round)
        progress.line(f"[fresh workers] {len(ready)} cells set up again for rounds "
                      f"{first_round + 1}- ({time.perf_counter() - t0:.1f} s)")

    def finish(self, cells, progress):
        for cell in cells:
            if cell["status"] != "ok":
                continue
            w = self.worker(self.worker_key(cell))
            try:
                answer = w.request({"op": "finish", "id": cell["id"]})
            except WorkerDied as e:
                answer = {"status": "error", "error": str(e)}
            w.pause()
            if answer.get("status") == "error":
                cell.update(status="error", error=answer["error"])
            else:
                cell.update(answer)
            if cell["status"] != "ok":
                progress.line(f"[verify] {describe(cell)}: {cell['status'].upper()}: "
                              f"{(cell.get('error') or '')[:120]}")
                # its samples stay, as evidence; no figure is derived from them
                for key in SUMMARY_KEYS:
                    cell.pop(key, None)
                cell["noise"] = summarize_noise(cell.get("noise_samples"))
                self.finalize(cell)
            else:
                self.summarize(cell)
            self.store(cell)

    def summarize(self, cell):
        timed = [s for s in cell["samples_s"] if s is not None]
        if timed:
            cell.update(summarize(timed))
        cell["noise"] = summarize_noise(cell.get("noise_samples"))
        self.finalize(cell)
