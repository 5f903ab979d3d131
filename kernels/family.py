"""The llm.c way of keeping kernels honest, as a small class.

A kernel family (one file: kernels/matmul.py, kernels/update.py, ...) holds a
reference, numbered versions, the shapes that matter and the FLOP / byte count
of one call. Every version returns each buffer it writes, under the names the
family declares in ``outputs`` (an in-place Adam returns p, m and v; a loss
kernel returns the loss and the gradient), and ``check`` compares each output
with the reference's on its own (models/checks.py), with a tolerance that
grows with the reduction length. Adding a version is one decorated function:
`mnist-bench kernels` then checks it on every check shape before it times it.

Each version names the ``library`` whose code it runs (numba, numpy, torch,
cuda): the sweep hosts each library in its own worker process, so thread pools
of different libraries never share a process. Timing lives in the measurement
core (bench/measure.py), not here.
"""
from dataclasses import dataclass, field

import numpy as np

from ..models.checks import compare, tolerance_for

LIBRARIES = ("numba", "numpy", "torch", "jax", "cuda")


@dataclass
class Version:
    name: str
    fn: object
    library: str = "numba"
    config: dict = None
    available: object = None  # () -> (ok, why not), beyond the family's own


@dataclass
class Check:
    version: str
    shape: tuple
    dtype: str
    ok: bool
    max_error: float = float("nan")
    error: str = ""
    errors: dict = field(default_factory=dict)


class KernelFamily:
    """reference(*inputs) -> outputs in float64; make_inputs(shape, dtype, rng) ->
    tuple of inputs; each version(*inputs) -> outputs (a tuple in ``outputs``
    order, or one array when there is one output)."""

    device = "cpu"

    def __init__(self, name, reference, make_inputs, outputs=("out",), flops=None, nbytes=None,
                 depth=None, dtypes=("float32",), sweep_shapes=(), check_shapes=(),
                 available=None, skip_timing=None):
        self.name, self.reference, self.make_inputs = name, reference, make_inputs
        self.outputs = tuple(outputs)
        self.flops = flops or (lambda shape: 0.0)
        # nbytes(shape, itemsize): the bytes one call must move at least.
        self.nbytes = nbytes or (lambda shape, itemsize: 0.0)
        self.depth = depth or (lambda shape: 1)
        self.dtypes = tuple(dtypes)
        self.sweep_shapes = [tuple(s) for s in sweep_shapes]
        self.check_shapes = [tuple(s) for s in check_shapes]
        self.available = available or (lambda: (True, ""))
        self.skip_timing = skip_timing or (lambda version, shape: False)
        self.versions = {}

    def version(self, fn=None, *, name=None, library="numba", config=None, available=None):
        """Decorator: register ``fn`` as the next version of the family."""
        if library not in LIBRARIES:
            raise ValueError(f"unknown library {library!r}; choose from {', '.join(LIBRARIES)}")

        def register(f):
            key = name or f.__name__
            if key in self.versions:
                raise ValueError(f"{self.name}: version {key!r} registered twice")
            self.versions[key] = Version(key, f, library, config, available)
            return f
        return register(fn) if fn is not None else register

    # -- inputs, on the host or the family's device --------------------------------
    def inputs(self, shape, dtype, seed=0):
        return self.make_inputs(tuple(shape), np.dtype(dtype), np.random.default_rng(seed))

    def to_device(self, inputs):
        """The inputs where the versions are timed (the host, for CPU families)."""
        return inputs

    def synchronize(self):
        """Wait for queued device work (CUDA families)."""

    @staticmethod
    def host(value):
        return value.copy_to_host() if hasattr(value, "copy_to_host") else value

    def call(self, version, inputs):
        """Run a version and bring its outputs to the host as a tuple."""
        got = self.versions[version].fn(*inputs)
        self.synchronize()
        got = got if isinstance(got, tuple) else (got,)
        return tuple(np.asarray(self.host(g)) for g in got)

    # -- checking ----------------------------------------------------------------
    def check(self, version, shape, dtype, seed=0) -> Check:
        """One version on one shape, every output against the float64 reference."""
        inputs = self.inputs(shape, np.dtype(dtype).name, seed)
        return self.check_call(version, shape, dtype, inputs, lambda: self.call(version, _copy(inputs)))

    def check_call(self, version, shape, dtype, inputs, call) -> Check:
        """``call()``'s outputs against the float64 reference on ``inputs`` (host
        arrays holding what the call computes from)."""
        dtype = np.dtype(dtype).name
        shape = tuple(shape)
        wide = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                     else a for a in _copy(inputs))
        try:
            want = self.reference(*wide)
            want = want if isinstance(want, tuple) else (want,)
            got = call()
        except Exception as e:  # a crashing kernel is a failed check, recorded
            return Check(version, shape, dtype, False, error=f"{type(e).__name__}: {e}")
        if len(got) != len(self.outputs):
            return Check(version, shape, dtype, False,
                         error=f"{len(got)} outputs, expected {len(self.outputs)} "
                               f"({', '.join(self.outputs)})")
        for name, g in zip(self.outputs, got):
            if g.ndim and g.dtype.kind == "f" and g.dtype != np.dtype(dtype):
                return Check(version, shape, dtype, False, error=f"{name}: dtype {g.dtype}, "
                                                                 f"expected {dtype}")
        result = compare(got, want, tolerance_for(dtype, self.depth(shape)), names=self.outputs)
        return Check(version, shape, dtype, result.ok, result.worst, result.message, result.errors)

    def check_timed(self, version, shape, dtype, timed_inputs, seed) -> Check:
        """The check after timing: the buffers the timed calls used are refilled in
        place with inputs drawn from ``seed`` (values the earlier checks never saw),
        and one more call through them must match the reference. A version that
        caches its result, or does less work after its first calls, fails here."""
        fresh = self.inputs(shape, np.dtype(dtype).name, seed)
        args = []
        for buf, new in zip(timed_inputs, fresh):
            if isinstance(buf, np.ndarray):
                np.copyto(buf, new)
                args.append(buf)
            elif hasattr(buf, "copy_to_device"):
                buf.copy_to_device(new)
                args.append(buf)
            else:
                args.append(new)
        return self.check_call(version, shape, dtype, fresh, lambda: self.call(version, tuple(args)))

    def validate(self, shapes=None, dtypes=None, versions=None):
        """Every version x dtype x shape (default: the check shapes and sweep shapes)."""
        shapes = shapes if shapes is not None else self.check_shapes
        return [self.check(v, s, d) for v in (versions or self.versions)
                for d in (dtypes or self.dtypes) for s in shapes]


def _copy(inputs):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in inputs)


def operands(form, m, k, n, dtype, rng):
    """The stored operands of an m x k by k x n product in ``form`` (Aᵀ stored (k, m)
    for tn, Bᵀ stored (n, k) for nt): the CPU and CUDA matmul families' inputs."""
    a_shape = (k, m) if form == "tn" else (m, k)
    b_shape = (n, k) if form == "nt" else (k, n)
    return rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
