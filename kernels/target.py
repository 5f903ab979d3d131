"""The CPU the kernels are compiled for, and the register tile and cache blocks
shaped to it -- decided before anything compiles.

The target is the host, or what NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name (on an
AVX-512 machine, ``NUMBA_CPU_NAME=haswell`` builds and runs the AVX2 path).
From its vector width and register count and the host's cache sizes follows
the matmul geometry (``derive``):

- NR: two vectors of B per depth step (32 floats on AVX-512, 16 on AVX2,
  8 on NEON or SSE);
- MR: as many rows as the accumulators (MR x 2 vectors), the two B vectors and
  one broadcast of A leave registers for: (registers - 3) // 2, at most 13;
- KC: one KC x NR panel of B fills up to a quarter of the L2 (at least the
  L1): every KC slice of the depth is one more pass over C through memory,
  while the panel streams from L2 at the micro-kernel's pace anyway (the
  tuner's measured best on the development machine);
- MC: one MC x KC block of A fills at most half the L2 (at least 2 x MR rows);
- NC: one KC x NC block of B fills at most a quarter of the L3, capped at 4096.

float64 uses the same registers with half the lanes: NR and KC in floats halve.
``mnist-bench tune`` may replace the derived geometry with a measured best for
this CPU (kept in the user's cache directory with the CPU model and compiler
versions it was found for); every result records which geometry it ran with
(``describe``), and Numba's on-disk cache is keyed by it (kernels/_numba.py).
"""
import hashlib
import json
import os
import platform

from ..models.cache import cache_root

# LLVM CPU names by widest vector ISA, for targets named by NUMBA_CPU_NAME alone.
AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
               "icelake-server", "tigerlake", "sapphirerapids", "emeraldrapids", "graniterapids",
               "rocketlake", "znver4", "znver5", "x86-64-v4", "knl", "knm")
AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
             "arrowlake", "lunarlake", "gracemont", "znver1", "znver2", "znver3", "x86-64-v3",
             "bdver4")
ISA = {  # vector bits, vector registers
    "avx512": (512, 32), "avx2": (256, 16), "neon": (128, 32), "sse": (128, 16),
}
# general-purpose registers by ISA: x86-64 has 16 (the stack pointer among them), AArch64 31
GENERAL_REGISTERS = {"avx512": 16, "avx2": 16, "sse": 16, "neon": 31}
TILE_KEYS = ("MR", "NR", "KC", "MC", "NC")


def _host_features():
    import llvmlite.binding as llvm
    return llvm.get_host_cpu_features().flatten(), llvm.get_host_cpu_name()


def target_cpu():
    """(LLVM CPU name, feature string) the kernels are compiled for."""
    name = os.environ.get("NUMBA_CPU_NAME")
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if name or features:
        return name or "generic", features or ""
    features, host = _host_features()
    return host, features


def isa_of(name, features) -> str:
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "neon"
    flags = set(features.split(","))
    if features:
        if "+avx512f" in flags:
            return "avx512"
        if "+avx2" in flags and "+fma" in flags:
            return "avx2"
        return "sse"
    name = (name or "").lower()
    if name in AVX512_CPUS:
        return "avx512"
    if name in AVX2_CPUS:
        return "avx2"
    return "sse"


def caches() -> dict:
    """{"L1d", "L2", "L3"} in bytes from /sys (one core's view), with defaults."""
    out = {"L1d": 32 << 10, "L2": 1 << 20, "L3": 8 << 20}
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(root)):
            d = os.path.join(root, index)
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip()
            size = int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[text[-1]] \
                if text[-1] in "KMG" else int(text)
            if kind in ("Data", "Unified"):
                out["L1d" if level == 1 else f"L{level}"] = size
    except (OSError, ValueError, KeyError):
        pass
    return out


def derive(isa, cache_sizes) -> dict:
    """The float32 matmul geometry for an ISA and cache sizes (see the module doc)."""
    bits, registers = ISA[isa]
    lanes = bits // 32
    nr = 2 * lanes
    mr = min(13, (registers - 3) // 2)
    kc = max(64, max(cache_sizes["L1d"], cache_sizes["L2"] // 4) // (nr * 4) // 16 * 16)
    depth = min(kc, 1024)  # the blocks are sized for the networks' depths (784, 1024)
    mc = max(2 * mr, min(1024, (cache_sizes["L2"] // 2) // (depth * 4)) // mr * mr)
    nc = max(nr, min(4096, (cache_sizes["L3"] // 4) // (depth * 4)) // nr * nr)
    return {"MR": mr, "NR": nr, "KC": kc, "MC": mc, "NC": nc}


def tuned_path(cpu_model, name, isa):
    safe = "".join(ch if ch.isalnum() else "-" for ch in f"{cpu_model}-{name}-{isa}").strip("-")
    return os.path.join(cache_root(), "tuned", f"{safe}.json")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiler_versions() -> dict:
    import llvmlite
    import numba
    return {"numba": numba.__version__, "llvmlite": llvmlite.__version__}


def load_tuned(path):
    """A stored tune result that still applies (same compiler versions), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get("compilers") != compiler_versions():
        return None
    tile = record.get("tile") or {}
    return record if all(isinstance(tile.get(k), int) and tile[k] > 0 for k in TILE_KEYS) else None


def choose():
    """(target description, float32 tile) for this process: the tuned geometry of
    this CPU where one is stored and MNIST_BENCH_TILE does not override it, else
    the derived one."""
    name, features = target_cpu()
    isa = isa_of(name, features)
    sizes = caches()
    derived = derive(isa, sizes)
    tile, source = derived, "derived"
    override = os.environ.get("MNIST_BENCH_TILE")
    if override:
        tile = dict(derived, **json.loads(override))
        source = "MNIST_BENCH_TILE"
    else:
        record = load_tuned(tuned_path(cpu_model(), name, isa))
        if record:
            tile, source = record["tile"], f"tuned {record.get('measured', '')}".strip()
    return {"cpu_name": name, "isa": isa, "vector_bits": ISA[isa][0],
            "vector_registers": ISA[isa][1], "general_registers": GENERAL_REGISTERS[isa], "caches": sizes,
            "features_sha": hashlib.sha256(features.encode()).hexdigest()[:12],
            "derived": derived, "tile_source": source}, tile


def cache_key(description, tile) -> str:
    """The directory name of the compiled code: target CPU and geometry."""
    text = json.dumps([description["cpu_name"], description["features_sha"], tile], sort_keys=True)
    return f"{description['cpu_name']}-{description['isa']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
