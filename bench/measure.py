"""The measurement core: the one CPU timer, the one GPU timer, the machine-noise
readings taken around every sample, and the check that a process's thread pools
are the ones its cell claims.

Every path that times something -- epochs (`mnist-bench run`), kernels
(`mnist-bench kernels`, `mnist-bench gpu`), the pytest-benchmark suites, the
tuner -- times through ``CpuTimer`` or ``CudaTimer``; what a sample *is* (one
epoch, one kernel call) is the caller's, the clock is this module's.
"""
import functools
import gc
import math
import os
import time

# The kernels' own timing unit: a sample loops a call until it lasts this long, so
# perf_counter's resolution and the loop's overhead stay far below 1 %.
MIN_SAMPLE_S = 0.02


class CpuTimer:
    """Wall time of ``loops`` calls of ``fn`` with the garbage collector off (a
    collection inside a sample would charge one backend for another's garbage)."""

    name = "cpu"

    def __call__(self, fn, loops=1) -> float:
        enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            elapsed = time.perf_counter() - t0
        finally:
            if enabled:
                gc.enable()
        return elapsed / loops

    def calibrate(self, fn, min_time=MIN_SAMPLE_S, max_loops=1 << 20) -> int:
        """Calls per sample so that one sample lasts at least ``min_time``."""
        fn()  # first call: compilation, first-touch pages
        loops = 1
        while True:
            # the fastest of three: a thread pool waking from sleep slows the first calls
            per_call = min(self(fn, loops) for _ in range(3))
            if per_call * loops >= min_time / 4 or loops >= max_loops:
                break
            loops = min(max_loops, loops * 4)
        return max(1, min(max_loops, math.ceil(min_time / max(per_call, 1e-9))))


def freeze_heap():
    """Before a warm-up: every object alive now (the imported libraries') moved
    out of the garbage collector's sight. Numba's compiler allocates objects by
    the million, and every full collection they set off would walk all of the
    libraries' again; those live until the process exits, so nothing is lost."""
    gc.collect()
    gc.freeze()


def objects_of(kind) -> list:
    """Every object of type ``kind`` the garbage collector tracks, those that
    freeze_heap froze included (gc.get_objects leaves those out)."""
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    try:
        return [o for o in gc.get_objects() if isinstance(o, kind)]
    finally:
        if frozen:
            gc.freeze()


class CudaTimer:
    """Device time of ``loops`` launches of ``fn`` from CUDA events, after flushing
    the L2 cache: a buffer twice the L2 size is rewritten before each sample, so a
    bandwidth-bound kernel (a 31 MB Adam update in a 50 MB L2) is not timed out of
    the cache. ``loops`` > 1 times later launches with the cache warm: the callers
    keep it at 1 for bandwidth figures."""

    name = "cuda"

    def __init__(self):
        from numba import cuda
        self.cuda = cuda
        device = cuda.get_current_device()
        l2 = getattr(device, "L2_CACHE_SIZE", 0) or (64 << 20)
        self.flush_bytes = 2 * int(l2)
        self._flush = cuda.device_array(self.flush_bytes // 4, "float32")
        self._kernel = _flush_kernel()

    def flush(self):
        n = self._flush.shape[0]
        self._kernel[max(1, min(4096, n // 256)), 256](self._flush)

    def __call__(self, fn, loops=1) -> float:
        cuda = self.cuda
        self.flush()
        start, stop = cuda.event(), cuda.event()
        start.record()
        for _ in range(loops):
            fn()
        stop.record()
        stop.synchronize()
        return cuda.event_elapsed_time(start, stop) / 1e3 / loops

    def calibrate(self, fn, min_time=MIN_SAMPLE_S, max_loops=1):
        fn()
        self.cuda.synchronize()
        return 1


def _flush_kernel():
    from numba import cuda

    @cuda.jit
    def flush_l2(buf):
        for i in range(cuda.grid(1), buf.size, cuda.gridsize(1)):
            buf[i] += 1.0
    return flush_l2


# -- machine noise ------------------------------------------------------------------

def _proc_stat():
    """(steal ticks, all ticks, busy ticks) summed over every CPU, or Nones."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None, None, None
    ticks = [int(x) for x in fields]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    # already counted in user, so it is left out of the total.
    busy = sum(ticks[:8]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0) - (ticks[7] if len(ticks) > 7 else 0)
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8]), busy


def _clock_mhz():
    """The mean current clock of the CPUs where the kernel exposes it (cpufreq), else
    the "cpu MHz" /proc/cpuinfo reports (on many VMs the nominal clock, constant)."""
    root = "/sys/devices/system/cpu"
    try:
        freqs = []
        for name in os.listdir(root):
            path = os.path.join(root, name, "cpufreq", "scaling_cur_freq")
            if name.startswith("cpu") and name[3:].isdigit() and os.path.exists(path):
                with open(path) as f:
                    freqs.append(int(f.read()) / 1000)
        if freqs:
            return sum(freqs) / len(freqs), "cpufreq"
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        if mhz:
            return sum(mhz) / len(mhz), "cpuinfo"
    except (OSError, ValueError):
        pass
    return None, None


def process_cpu_seconds(pid):
    """CPU time (user + system, every thread) a process has used, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_delay_seconds(pid):
    """Seconds the threads of a process have spent runnable but waiting for a CPU
    (the scheduler's run_delay, summed over /proc/PID/task/*/schedstat), or None
    where the kernel does not report it."""
    total, seen = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
                seen = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9 if seen else None


# A sample during which other processes than the sampled worker used this share of
# the machine's CPU time (every core), or the hypervisor stole more than
# NOISY_STEAL, was disturbed: it is taken again. Not the worker's own waiting for a
# CPU (``waited_share``, recorded): XLA starts more threads than the cell's count,
# which then wait on each other in every sample alike.
OTHERS_SHARE = 0.15


class Noise:
    """Readings taken just before and just after one sample: the share of CPU time
    the hypervisor stole, the load average, the clock, how long the sampled
    process (``target``) waited for a CPU, and the CPU time that other processes
    of the sweep (``watch``: the idle workers) used meanwhile, which must stay 0
    for the interleaving to be fair."""

    def __init__(self, watch=(), target=None):
        self.watch = list(watch)
        self.target = target

    def start(self):
        self._steal, self._total, self._busy = _proc_stat()
        self._others = [process_cpu_seconds(p) for p in self.watch]
        self._delay = run_delay_seconds(self.target) if self.target else None
        self._own = [process_cpu_seconds(p) for p in (self.target, os.getpid()) if p]
        self._t0 = time.perf_counter()

    def stop(self) -> dict:
        wall = time.perf_counter() - self._t0
        steal, total, busy = _proc_stat()
        own = [process_cpu_seconds(p) for p in (self.target, os.getpid()) if p]
        out = {"load1": round(os.getloadavg()[0], 2)}
        delay = run_delay_seconds(self.target) if self.target else None
        if delay is not None and self._delay is not None and wall > 0:
            out["waited_share"] = round((delay - self._delay) / wall, 4)
        if busy is not None and self._busy is not None and wall > 0 and None not in own + self._own:
            ticks = os.sysconf("SC_CLK_TCK")
            others = (busy - self._busy) / ticks - sum(b - a for a, b in zip(self._own, own))
            out["others_share"] = round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 4)
        if steal is not None and self._steal is not None and total > self._total:
            out["steal"] = round((steal - self._steal) / (total - self._total), 4)
        mhz, source = _clock_mhz()
        if mhz:
            out["mhz"] = round(mhz, 1)
            out["mhz_source"] = source
        if self.watch:
            used = [process_cpu_seconds(p) for p in self.watch]
            out["idle_workers_cpu_s"] = round(sum(b - a for a, b in zip(self._others, used)
                                                  if a is not None and b is not None), 4)
        return out


def summarize_noise(readings) -> dict:
    """A cell's noise over its samples: worst steal share and load, the clock's
    range, and the idle workers' CPU time in all."""
    readings = [r for r in readings if r]
    if not readings:
        return {}
    out = {"samples": len(readings)}
    steal = [r["steal"] for r in readings if "steal" in r]
    if steal:
        out["steal_max"], out["steal_mean"] = max(steal), round(sum(steal) / len(steal), 4)
    out["load1_max"] = max(r["load1"] for r in readings)
    mhz = [r["mhz"] for r in readings if "mhz" in r]
    if mhz:
        out["mhz_min"], out["mhz_max"] = min(mhz), max(mhz)
        out["mhz_source"] = readings[-1].get("mhz_source")
    for key in ("waited_share", "others_share"):
        values = [r[key] for r in readings if key in r]
        if values:
            out[f"{key}_max"] = max(values)
    idle = [r["idle_workers_cpu_s"] for r in readings if "idle_workers_cpu_s" in r]
    if idle:
        out["idle_workers_cpu_s"] = round(sum(idle), 4)
    return out


def descheduled(reading) -> str:
    """Why a sample's noise reading says it was descheduled, or ''."""
    from .stats import NOISY_STEAL
    if reading.get("others_share", 0) > OTHERS_SHARE:
        return f"other processes used {reading['others_share']:.0%} of the CPU during the sample"
    if reading.get("steal", 0) > NOISY_STEAL:
        return f"{reading['steal']:.0%} of the CPU stolen by the hypervisor"
    return ""


# -- thread pools ----------------------------------------------------------------------

def thread_pools() -> dict:
    """Every thread pool this process has, as the libraries report them:
    threadpoolctl's view of each BLAS and OpenMP runtime (with OpenBLAS's kernel
    set, e.g. SkylakeX or Haswell), Numba's and torch's own counts, and the
    environment variables that set them."""
    from .machine import THREAD_VARS
    import sys
    from .fpenv import state
    out = {"env": {v: os.environ.get(v) for v in THREAD_VARS}, "pools": [], "subnormals": state(),
           "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            out["pools"].append({k: p.get(k) for k in ("user_api", "internal_api", "num_threads",
                                                       "version", "architecture", "prefix")})
    except ImportError:
        out["pools_error"] = "threadpoolctl is not installed"
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        out["numba_threads"] = numba.get_num_threads()
        try:
            out["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel function has run in this process
            out["numba_threading_layer"] = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
        # the vector ISA of ATen's own kernels, and the code path of the MKL its
        # float32 GEMMs call: MKL picks by CPU vendor, not by ATen's setting
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_mkl_code_path"] = mkl_code_path()
    if "jax" in sys.modules:
        out["xla_flags"] = os.environ.get("XLA_FLAGS")
    kernels = sys.modules.get(__package__.rpartition(".")[0] + ".kernels._numba")
    if kernels is not None:  # what the CPU kernels of this process were compiled for
        out["kernels"] = {k: kernels.TARGET[k] for k in ("cpu_name", "isa", "vector_bits",
                                                          "tile_source", "cache_key")}
        out["kernels"]["tile"] = kernels.TILE
    return out


@functools.lru_cache(maxsize=None)
def mkl_code_path():
    """The processors torch's MKL says it runs code for, from its verbose line
    ("... for Intel(R) 64 architecture <processors>, ..."): e.g. "Intel(R)
    Advanced Vector Extensions 512 (Intel(R) AVX-512) enabled processors", or
    "Intel(R) Architecture processors", the generic path it takes on other
    vendors' CPUs. None where torch has no MKL or the line cannot be read.
    Asked once per process (MKL prints the line once): verbose mode on, one
    small product with the process's standard output sent to a file, then off."""
    import ctypes
    import re
    import sys
    import tempfile
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.backends.mkl.is_available():
            return None
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        saved = os.dup(1)
        with tempfile.TemporaryFile() as f:
            os.dup2(f.fileno(), 1)
            try:
                lib.MKL_Verbose(1)
                torch.mm(torch.ones(64, 64), torch.ones(64, 64))
                lib.MKL_Verbose(1 if os.environ.get("MKL_VERBOSE", "0") not in ("", "0") else 0)
                libc.fflush(None)
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            f.seek(0)
            text = f.read().decode(errors="replace")
    except (OSError, AttributeError, RuntimeError):
        return None
    found = re.search(r"for Intel\(R\) 64 architecture (.+?),", text)
    return found.group(1).strip() if found else None


def thread_mismatches(pools: dict, threads: int) -> list:
    """What differs from ``threads`` in a thread_pools() record (empty: all agree)."""
    wrong = [f"{p['internal_api']} ({p['user_api']}) runs {p['num_threads']} threads"
             for p in pools.get("pools", []) if p.get("num_threads") != threads]
    for key in ("numba_threads", "torch_threads"):
        if key in pools and pools[key] != threads:
            wrong.append(f"{key.replace('_', ' ')} = {pools[key]}")
    return wrong
