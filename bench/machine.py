"""What a result was measured on: machine, library versions, BLAS and threads, git
commit. Recorded in every run header so results from different machines and
commits can sit side by side and still be told apart."""
import ctypes
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

# ISA extensions that decide which kernels a compiler can emit here.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "neon", "asimd", "sve")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _cpuinfo() -> dict:
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _memory_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpu_info():
    """{"name", "driver", "memory_gb"} of the first NVIDIA GPU, or None (no nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, driver, mem = [s.strip() for s in out.stdout.splitlines()[0].split(",")]
    return {"name": name, "driver": driver, "memory_gb": round(float(mem) / 1024, 1)}


def _llvm_host_cpu():
    """LLVM's name for the host CPU (znver4, sapphirerapids, apple-m1): what tells
    two VMs apart whose CPU model reads only "AMD EPYC"."""
    try:
        import llvmlite.binding as llvm
        return llvm.get_host_cpu_name()
    except (ImportError, OSError, RuntimeError):
        return None


def machine_info() -> dict:
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    return {"hostname": socket.gethostname(),
            "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
            "llvm_cpu": _llvm_host_cpu(),
            "cores": os.cpu_count(),
            "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "memory_gb": _memory_gb(),
            # The clock the kernel reports (nominal on VMs); the report's peak uses it.
            "cpu_mhz": float(cpu["cpu MHz"]) if cpu.get("cpu MHz") else None,
            "gpu": gpu_info()}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _openblas():
    """The OpenBLAS that NumPy loaded, asked directly: (config, core type, threads).
    Its exported names carry NumPy's wheel prefix/suffix (scipy_openblas_*64_)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "openblas" in line.split()[-1].lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas_", "64_"), ("scipy_openblas_", ""),
                               ("openblas_", "64_"), ("openblas_", "")):
            try:
                config = getattr(lib, f"{prefix}get_config{suffix}")
                corename = getattr(lib, f"{prefix}get_corename{suffix}")
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
            except AttributeError:
                continue
            config.restype = corename.restype = ctypes.c_char_p
            return {"config": config().decode(), "coretype": corename().decode(),
                    "threads": int(threads())}
    return None


def blas_info() -> dict:
    """NumPy's BLAS: name and version from its build config, core type and thread
    count from the loaded library where it is OpenBLAS."""
    import numpy as np
    try:
        build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # older NumPy without mode="dicts"
        build = {}
    info = {"name": build.get("name"), "version": build.get("version"),
            "config": build.get("openblas configuration"), "coretype": None, "threads": None}
    loaded = _openblas()
    if loaded:
        info.update(loaded)
    return info


def versions() -> dict:
    """Library versions without importing torch (seconds) into the parent process."""
    import numpy as np
    try:
        import numba
        layer = numba.config.THREADING_LAYER
    except ImportError:
        layer = None
    return {"python": sys.version.split()[0], "numpy": np.__version__, "blas": blas_info(),
            "numba": _version("numba"), "numba_threading_layer": layer,
            "torch": _version("torch"), "pandas": _version("pandas"),
            "platform": platform.platform()}


def git_info(cwd=None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the source tree."""
    cwd = cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        # Untracked source counts as dirty (the commit alone would not reproduce the
        # run); the results store itself does not.
        status = git("status", "--porcelain", "--", ".", ":(exclude)results")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
