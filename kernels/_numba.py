"""Numba settings shared by the CPU kernel files; import this before any @njit.

- The compile target (kernels/target.py): the host, or NUMBA_CPU_NAME. Numba's
  JIT passes the *host's* feature list to LLVM even when NUMBA_CPU_NAME names
  another CPU, so ``NUMBA_CPU_NAME=haswell`` alone would still emit AVX-512;
  with a CPU name and no NUMBA_CPU_FEATURES the features are left to LLVM's
  definition of that CPU.
- LLVM tunes Skylake-X and later Xeons with ``prefer-256-bit``, vectorising 8
  floats wide (ymm) although the cores execute 16-wide (zmm) FMAs at full rate;
  on an AVX-512 host the feature list gets ``-prefer-256-bit``. Left alone when
  the user sets NUMBA_CPU_FEATURES or NUMBA_CPU_NAME.
- Numba's on-disk cache does not key compiled code by the values of the
  globals it froze in (the tile sizes), nor by the source of the functions a
  cached function calls from other files (a caller cached against an older
  callee is loaded as is), so the cache directory is keyed by both: it is
  ``<NUMBA_CACHE_DIR or the suite's cache>/numba/<target and tile key>-<kernel source hash>``.
- ``fastmath`` without ``nnan``/``ninf``: reassociation and FMA contraction
  let LLVM vectorise reductions, while NaN/inf checks keep their meaning.
- The thread pool is started on import. A parallel kernel loaded from the
  cache starts it itself, but a serial caller compiled against such a cached
  kernel does not record that it must (Numba keeps that duty only with
  libraries it compiled in the same process), so the caller, once cached too,
  would call through the pool's null entry points: a segfault on every later
  run (the fused mlp epoch did, after its parallel pieces had been compiled by
  another process).
"""
import hashlib
import os
import types

import numba.core.config as _config

from ..models.cache import cache_root
from . import target as _target

TARGET, TILE = _target.choose()
if not os.environ.get("NUMBA_CPU_FEATURES"):
    if os.environ.get("NUMBA_CPU_NAME"):
        _config.CPU_FEATURES = ""
    elif TARGET["isa"] == "avx512":
        import llvmlite.binding as _llvm
        _features = _llvm.get_host_cpu_features().flatten()
        _config.CPU_FEATURES = ",".join(f for f in _features.split(",") if "prefer-256-bit" not in f) \
            + ",-prefer-256-bit"


def _kernel_source_sha() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for f in sorted(os.listdir(here)):
        if f.endswith(".py"):
            with open(os.path.join(here, f), "rb") as fh:
                h.update(f.encode() + b"\0" + fh.read())
    return h.hexdigest()[:8]


TARGET["cache_key"] = _target.cache_key(TARGET, TILE)
_config.CACHE_DIR = os.path.join(os.environ.get("NUMBA_CACHE_DIR") or os.path.join(cache_root(), "numba"),
                                 f"{TARGET['cache_key']}-{_kernel_source_sha()}")

import numba  # noqa: E402  (after the settings above)
from numba import types as _types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

numba.get_num_threads()  # starts the thread pool: see the note above

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
# Without reassociation: a sum keeps the order written. LLVM may reorder a
# reassociable reduction differently in each caller it is inlined into, so the
# same kernel could give results one rounding apart compiled in one process and
# loaded from the cache in the next.
FASTMATH_IN_ORDER = FASTMATH - {"reassoc"}
# Every CPU kernel: cached on disk so later processes skip compilation.
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
JIT_PARALLEL = dict(JIT, parallel=True)


def njit(fn=None, **overrides):
    """numba.njit with the suite's options (cache, fastmath, numpy error model)."""
    opts = dict(JIT, **overrides)
    return numba.njit(**opts)(fn) if fn is not None else numba.njit(**opts)


def njit_leaf(fn=None, **overrides):
    """njit for the small functions a kernel calls once a tile or a row (tiles, dot
    products, axpys): without reference counting. Numba increfs a function's
    array arguments on entry and decrefs them on exit, atomic updates its
    pruning pass leaves in place around loops, on counts every thread shares.
    Such a function must allocate nothing and return no array."""
    return njit(fn, **dict(overrides, _nrt=False))


def njit_parallel(fn=None, **overrides):
    return njit(fn, **dict(JIT_PARALLEL, **overrides))


def _copy(fn, suffix, globals_=None):
    twin = types.FunctionType(fn.__code__, fn.__globals__ if globals_ is None else globals_,
                              fn.__name__ + suffix, fn.__defaults__, fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__doc__ = fn.__doc__
    return twin


def serial_and_parallel(fn):
    """One body compiled twice: (serial, parallel) dispatchers of ``fn``.

    ``prange`` is a plain ``range`` without ``parallel=True``, so the same loop
    runs on one thread or on Numba's pool. The parallel copy is a new function
    object named ``<name>_parallel``: Numba's on-disk cache keys entries by the
    function's name, signature and target but not by the parallel flag, so two
    dispatchers of one function object would load each other's machine code.

    The thread pool's loop index is unsigned: a ``prange`` body passes it on as
    ``np.intp(i)``, or a function it calls that others call with a signed
    index compiles a second time.
    """
    return njit(fn), njit_parallel(_copy(fn, "_parallel"))


def specialize(functions, suffix, constants, parallel=(), cache=True, leaves=()):
    """Compile a set of functions again with some of their module's globals
    replaced by ``constants`` (tile sizes): {name: dispatcher}.

    Each copy shares its body with the original and gets ``suffix`` on its name;
    calls between the functions of the set go to the copies (they resolve their
    globals in one new namespace), and names listed in ``parallel`` compile
    with parallel=True, and names listed in ``leaves`` without reference
    counting, as njit_leaf compiles (functions called once a tile). Numba
    freezes global values at compile time, so each set is its own machine
    code: float64 gets its own tile this way, and the tuner compiles
    candidates without touching the module.
    """
    namespace = dict(functions[0].__globals__)
    namespace.update(constants)
    out = {}
    for fn in functions:
        options = dict(JIT_PARALLEL if fn.__name__ in parallel else JIT, cache=cache)
        if fn.__name__ in leaves:
            options["_nrt"] = False
        out[fn.__name__] = numba.njit(**options)(_copy(fn, suffix, namespace))
        namespace[fn.__name__] = out[fn.__name__]
    return out


@intrinsic
def stack_array(typingctx, size, dtype):
    """A 1-D array of ``size`` (a compile-time constant) items on the stack.

    Memory that never escapes the function is provably disjoint from every
    argument, so once the loops over it are unrolled LLVM keeps it in registers;
    a heap array (np.empty) could alias the operands and stays in memory."""
    if not isinstance(size, _types.IntegerLiteral):
        return None
    n, dt = size.literal_value, dtype.dtype
    array_type = _types.Array(dt, 1, "C")

    def codegen(context, builder, signature, args):
        item = context.get_data_type(dt)
        intp = context.get_value_type(_types.intp)
        itemsize = context.get_abi_sizeof(item)
        array = context.make_array(array_type)(context, builder)
        context.populate_array(array, data=cgutils.alloca_once(builder, item, size=n),
                               shape=[intp(n)], strides=[intp(itemsize)],
                               itemsize=intp(itemsize), meminfo=None)
        return array._getvalue()
    return array_type(size, dtype), codegen


@intrinsic
def rows_contiguous(typingctx, arr):
    """Whether the 2-D ``arr``'s rows are contiguous (its items one itemsize
    apart): the constant True for a C-layout array, so that a branch for other
    layouts is not compiled into the code for C-layout ones at all."""
    if not (isinstance(arr, _types.Array) and arr.ndim == 2):
        return None

    def codegen(context, builder, signature, args):
        if signature.args[0].layout == "C":
            return cgutils.true_bit
        a = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.icmp_signed("==", builder.extract_value(a.strides, 1), a.itemsize)
    return _types.boolean(arr), codegen


def _prefetch_codegen(locality):
    """Code for prefetch_lines and prefetch_lines_outer: the lines first ..
    first + count - 1 of a row, clipped to the row."""
    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        a = context.make_array(signature.args[0])(context, builder, args[0])
        intp = context.get_value_type(_types.intp)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.globals.get("llvm.prefetch.p0") or ir.Function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), name="llvm.prefetch.p0")
        stride = builder.extract_value(a.strides, 0)
        base = builder.add(builder.ptrtoint(a.data, intp), builder.mul(args[1], stride))
        first, end = args[2], builder.udiv(builder.add(stride, intp(63)), intp(64))
        last = builder.add(first, args[3])
        end = builder.select(builder.icmp_signed("<", last, end), last, end)
        n = builder.sub(end, first)
        with cgutils.for_range(builder, builder.select(builder.icmp_signed(">", n, intp(0)), n, intp(0))) as loop:
            ptr = builder.inttoptr(builder.add(base, builder.mul(builder.add(first, loop.index), intp(64))), i8p)
            builder.call(fn, [ptr, i32(0), i32(locality), i32(1)])
        return context.get_dummy_value()
    return codegen


@intrinsic
def prefetch_lines(typingctx, arr, row, first, count):
    """Ask the caches, all levels down to L1 (locality 3), for lines first ..
    first + count - 1 (64 bytes each, clipped to the row) of row ``row`` of the
    2-D C-contiguous ``arr``. A few lines at a time between pieces of work: a
    whole row at once (49 lines of a 784-float row) outran what the core keeps
    in flight, and the gather that read the rows later found most of them still
    in memory (a burst of whole rows into the outer caches fared worse there)."""
    if not (isinstance(arr, _types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None
    return _types.none(arr, _types.intp, _types.intp, _types.intp), _prefetch_codegen(3)


@intrinsic
def prefetch_lines_outer(typingctx, arr, row, first, count):
    """prefetch_lines into the outer caches only (locality 1): for rows wanted a
    step later, while the current step's own operands hold the L1 (nielsen's
    next batch, and the linear epoch's next block, during the weight gradient)."""
    if not (isinstance(arr, _types.Array) and arr.ndim == 2 and arr.layout == "C"):
        return None
    return _types.none(arr, _types.intp, _types.intp, _types.intp), _prefetch_codegen(1)


@intrinsic
def pow2_float32(typingctx, n):
    """2.0**n as float32 for an integer n in [-126, 127]: the exponent bits set
    directly ((n + 127) << 23, bitcast), plain integer IR that LLVM vectorises
    (a call to exp does not vectorise without a vector math library)."""
    if not isinstance(n, _types.Integer):
        return None

    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        i32 = ir.IntType(32)
        v = context.cast(builder, args[0], signature.args[0], _types.int32)
        bits = builder.shl(builder.add(v, i32(127)), i32(23))
        return builder.bitcast(bits, ir.FloatType())
    return _types.float32(n), codegen
