"""Subnormal floats on equal terms.

XLA (the jax backends) flushes subnormal results to zero and reads subnormal
inputs as zero; NumPy, Numba and PyTorch keep IEEE gradual underflow, which
x86 cores compute in microcode, tens of times slower. In the mlp under momentum
at small batches, the velocities of weights that never get a gradient (the
always-black border pixels) decay by 0.9 a step into the subnormal range, and
from then on every update runs at that speed for every backend but XLA. So each
worker sets flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) first
thing, before any library starts a thread: a thread inherits the floating-point
environment of the thread that creates it (POSIX), so every pool the process
starts later -- OpenBLAS's, Numba's, OpenMP's, XLA's -- computes the same way.

Only x86-64 has an MXCSR; elsewhere nothing is set and ``state()`` says what
the arithmetic does.
"""
import ctypes
import platform

FTZ_DAZ = (1 << 15) | (1 << 6)
_IR = """
declare void @llvm.x86.sse.stmxcsr(ptr)
declare void @llvm.x86.sse.ldmxcsr(ptr)
define i32 @mxcsr_or(i32 %bits) {
  %slot = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %slot)
  %old = load i32, ptr %slot
  %new = or i32 %old, %bits
  store i32 %new, ptr %slot
  call void @llvm.x86.sse.ldmxcsr(ptr %slot)
  ret i32 %old
}
"""
_keep = []  # the engine must outlive the call


def flush_subnormals() -> str:
    """Set FTZ and DAZ in this thread; returns what the arithmetic now does."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return state()
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    module = llvm.parse_assembly(_IR)
    target = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(module, target)
    engine.finalize_object()
    _keep.append(engine)
    ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32)(engine.get_function_address("mxcsr_or"))(FTZ_DAZ)
    return state()


def state() -> str:
    """'flush-to-zero' when a subnormal float32 input reads as zero, else 'ieee'."""
    import numpy as np
    tiny = np.array([1e-39], np.float32)
    return "flush-to-zero" if float((tiny * np.float32(1.0))[0]) == 0.0 else "ieee"
