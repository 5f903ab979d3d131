"""The llm.c way of keeping kernels honest, as a small class.

A kernel family (one file: kernels/matmul.py, kernels/update.py, ...) holds a
reference, numbered versions, the shapes that matter, and the FLOP/byte count
of one call. ``validate`` runs every version against the reference on every
shape and dtype; ``benchmark`` times only the versions that passed, first
recording the cold call (JIT compile) apart from the steady state. Adding a
version is adding one decorated function: it is checked and timed at once.

    python -m kernels.matmul            # "All results match. Starting benchmarks."
"""
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Check:
    version: str
    shape: tuple
    dtype: str
    ok: bool
    max_error: float = float("nan")
    error: str = ""


@dataclass
class Timing:
    version: str
    shape: tuple
    dtype: str
    first_call_s: float          # includes JIT compilation for Numba kernels
    samples_s: list = field(default_factory=list)
    flops: float = 0.0
    bytes: float = 0.0

    @property
    def median_s(self):
        return float(np.median(self.samples_s))

    @property
    def gflops(self):
        return self.flops / self.median_s / 1e9 if self.flops else float("nan")

    @property
    def gbytes_per_s(self):
        return self.bytes / self.median_s / 1e9 if self.bytes else float("nan")


class KernelFamily:
    """reference(*inputs) -> expected array; make_inputs(shape, dtype, rng) -> tuple;
    each version(*inputs) -> result array (in-place kernels return what they updated)."""

    def __init__(self, name, reference, make_inputs, flops=None, nbytes=None,
                 rtol=None, synchronize=None, available=None):
        self.name, self.reference, self.make_inputs = name, reference, make_inputs
        self.flops = flops or (lambda shape: 0.0)
        self.nbytes = nbytes or (lambda shape: 0.0)
        self.rtol = rtol or {"float32": 2e-5, "float64": 1e-12}
        self.synchronize = synchronize or (lambda: None)
        self.available = available or (lambda: (True, ""))
        self.versions = {}

    def version(self, fn=None, *, name=None):
        """Decorator: register ``fn`` as the next numbered version of the family."""
        def register(f):
            self.versions[name or f.__name__] = f
            return f
        return register(fn) if fn is not None else register

    def _inputs(self, shape, dtype, seed):
        return self.make_inputs(shape, np.dtype(dtype), np.random.default_rng(seed))

    @staticmethod
    def _copy(inputs):
        return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in inputs)

    def check(self, version, shape, dtype, seed=0) -> Check:
        """Run one version on one shape; compare with the reference computed in float64."""
        dtype = np.dtype(dtype).name
        inputs = self._inputs(shape, dtype, seed)
        wide = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                     else a for a in self._copy(inputs))
        try:
            expected = np.asarray(self.reference(*wide), dtype=np.float64)
            got = self.versions[version](*self._copy(inputs))
            self.synchronize()
            got = np.asarray(got.copy_to_host() if hasattr(got, "copy_to_host") else got)
        except Exception as e:  # a crashing kernel is a failed check, recorded
            return Check(version, shape, dtype, False, error=f"{type(e).__name__}: {e}")
        if got.shape != expected.shape:
            return Check(version, shape, dtype, False,
                         error=f"shape {got.shape}, expected {expected.shape}")
        if got.dtype != np.dtype(dtype) and got.dtype.kind == "f":
            return Check(version, shape, dtype, False, error=f"dtype {got.dtype}, expected {dtype}")
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
        err = float(np.max(np.abs(got - expected))) / scale if expected.size else 0.0
        ok = bool(np.isfinite(err) and err <= self._tolerance(shape, dtype))
        return Check(version, shape, dtype, ok, err,
                     "" if ok else f"max error {err:.3g} over tolerance")

    def _tolerance(self, shape, dtype):
        # Accumulated rounding grows with the reduction length (the largest dim).
        depth = max(shape) if len(shape) else 1
        return self.rtol[dtype] * max(1.0, np.sqrt(depth))

    def validate(self, shapes, dtypes=("float32",), versions=None):
        return [self.check(v, s, d) for v in (versions or self.versions)
                for d in dtypes for s in shapes]

    def time(self, version, shape, dtype="float32", repeats=10, min_time=0.05) -> Timing:
        """Cold first call, then ``repeats`` samples, each looping to at least min_time."""
        inputs = self._inputs(shape, dtype, 0)
        fn = self.versions[version]
        t0 = time.perf_counter()
        fn(*inputs)
        self.synchronize()
        first = time.perf_counter() - t0
        t0, loops = time.perf_counter(), 0
        while loops < 3 or time.perf_counter() - t0 < min_time / 4:
            fn(*inputs)
            loops += 1
        self.synchronize()
        per_call = (time.perf_counter() - t0) / loops
        inner = max(1, int(min_time / max(per_call, 1e-9)))
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn(*inputs)
            self.synchronize()
            samples.append((time.perf_counter() - t0) / inner)
        return Timing(version, tuple(shape), np.dtype(dtype).name, first, samples,
                      float(self.flops(shape)), float(self.nbytes(shape)))

    def benchmark(self, shapes, dtypes=("float32",), versions=None, repeats=10, log=print):
        """Validate everything first; time only what matched (failures are returned too)."""
        checks = self.validate(shapes, dtypes, versions)
        failed = {(c.version, c.dtype) for c in checks if not c.ok}
        for c in checks:
            if not c.ok:
                log(f"  FAIL {self.name}.{c.version} {c.shape} {c.dtype}: {c.error}")
        if not failed:
            log("All results match. Starting benchmarks.")
        timings = []
        for v in (versions or self.versions):
            for d in dtypes:
                if (v, d) in failed:
                    continue
                for s in shapes:
                    t = self.time(v, s, d, repeats)
                    timings.append(t)
                    extra = f"{t.gflops:8.1f} GFLOP/s" if t.flops else f"{t.gbytes_per_s:8.1f} GB/s"
                    log(f"  {self.name}.{v:<28} {str(s):<22} {d:<8} {t.median_s * 1e6:12.1f} us {extra}")
        return checks, timings


def main(families, argv=None, description="validate every version, then time it"):
    """The command line of every kernel file (``python -m kernels.<file>``).

    Validates each family on its ``check_shapes`` (default: its sweep shapes) in
    every dtype it declares; only if all match does it time the versions on the
    sweep shapes. A family may define ``skip_timing(version, shape)`` for
    versions that would take minutes per call at the largest shapes.
    """
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--families", default=None, help="comma-separated (default: all)")
    parser.add_argument("--versions", default=None, help="comma-separated (default: all)")
    parser.add_argument("--shapes", default=None, help="e.g. 1024x1024x1024,60000x784x10")
    parser.add_argument("--dtypes", default="float32", help="dtypes to time")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    chosen = [f for f in families if not args.families or f.name in args.families.split(",")]
    versions = args.versions.split(",") if args.versions else None
    failed = False
    for fam in chosen:
        ok, why = fam.available()
        if not ok:
            print(f"{fam.name}: not timed ({why})")
        names = [v for v in (versions or fam.versions) if v in fam.versions]
        checks = fam.validate(getattr(fam, "check_shapes", fam.sweep_shapes),
                              getattr(fam, "dtypes", ("float32",)), names)
        for c in checks:
            if not c.ok:
                print(f"  FAIL {fam.name}.{c.version} {c.shape} {c.dtype}: {c.error}")
                failed = True
    if failed:
        return 1
    print("All results match. Starting benchmarks.")
    skip = lambda fam, v, s: getattr(fam, "skip_timing", lambda v, s: False)(v, s)
    for fam in chosen:
        if not fam.available()[0]:
            continue
        shapes = ([tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
                  if args.shapes else fam.sweep_shapes)
        for v in [v for v in (versions or fam.versions) if v in fam.versions]:
            for d in args.dtypes.split(","):
                for s in shapes:
                    if skip(fam, v, s):
                        continue
                    t = fam.time(v, s, d, args.repeats)
                    rate = (f"{t.gflops:8.1f} GFLOP/s" if t.flops else
                            f"{t.gbytes_per_s:8.1f} GB/s" if t.bytes else "")
                    print(f"  {fam.name}.{v:<22} {str(s):<22} {d:<8} "
                          f"{t.median_s * 1e6:12.1f} us {rate}")
    return 0
