"""Numba settings shared by the CPU kernel files; import this before any @njit.

Two choices made here, both measured on the development machine (Xeon, Emerald
Rapids, AVX-512):

- LLVM tunes Skylake-X and later Xeons with ``prefer-256-bit``, so Numba's
  loops are vectorised 8 floats wide (ymm) although the cores execute 16-wide
  (zmm) FMAs at full rate. Dropping that tuning flag doubles the FMA
  throughput of the matmul micro-kernel. The flag only changes how LLVM
  vectorises; the features list is otherwise the host's own, and it is left
  alone entirely when the user set NUMBA_CPU_FEATURES or NUMBA_CPU_NAME.
- ``fastmath`` without ``nnan``/``ninf``: reassociation and FMA contraction
  let LLVM vectorise reductions, while NaN/inf checks keep their meaning.
"""
import os

import llvmlite.binding as llvm


def _host_features_without_256bit_preference() -> str:
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features:
        return ""
    return ",".join(f for f in features.split(",") if "prefer-256-bit" not in f) + ",-prefer-256-bit"


WIDE_VECTORS = False
if not os.environ.get("NUMBA_CPU_FEATURES") and not os.environ.get("NUMBA_CPU_NAME"):
    _features = _host_features_without_256bit_preference()
    if _features:
        # Read by Numba's CPU codegen when it is first created (the first
        # compilation), so this takes effect even if numba was already imported,
        # as long as nothing has been compiled for the CPU yet.
        os.environ["NUMBA_CPU_FEATURES"] = _features
        import numba.core.config as _config

        if not _config.CPU_FEATURES:
            _config.CPU_FEATURES = _features
        WIDE_VECTORS = _config.CPU_FEATURES == _features

import numba  # noqa: E402  (after the settings above)

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Every CPU kernel: cached on disk so later processes skip compilation.
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
JIT_PARALLEL = dict(JIT, parallel=True)


def njit(fn=None, **overrides):
    """numba.njit with the suite's options (cache, fastmath, numpy error model)."""
    opts = dict(JIT, **overrides)
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def njit_parallel(fn=None, **overrides):
    return njit(fn, **dict(JIT_PARALLEL, **overrides))
