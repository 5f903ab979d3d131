"""Compile every CUDA kernel of the suite to PTX for sm_90 (H100) without a GPU.

The simulator runs kernels as Python, so it never type-checks them the way the
CUDA target does (a non-constant shared-array shape, an unsupported builtin) nor
shows register spills to local memory. NVVM does both; it ships in the pip wheel
nvidia-cuda-nvcc-cu12:

    pip install --target /tmp/nvcc nvidia-cuda-nvcc-cu12
    CUDA_HOME=/tmp/nvcc/nvidia/cuda_nvcc PYTHONPATH=. python tests/cuda_ptx_check.py

Exit status = number of kernels that failed to compile or use local memory.
"""
import sys
import types as pytypes

import numba.cuda.dispatcher

# Device functions are compiled for the current device's compute capability;
# with no driver, say it is an H100.
numba.cuda.dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(
    compute_capability=(9, 0))

import numpy as np  # noqa: E402
from numba import types  # noqa: E402
from numba.cuda import compile_ptx  # noqa: E402

from mnist_numba_bench.kernels import cuda_epoch, cuda_matmul, cuda_nn, cuda_update  # noqa: E402


def jobs():
    t = numba.typeof
    f1, f2, f4 = (t(np.zeros((1,) * d, np.float32)) for d in (1, 2, 4))
    i1, i2 = t(np.zeros(1, np.int64)), t(np.zeros((1, 1), np.int64))
    i8x4 = t(np.zeros((1,) * 4, np.int8))
    i64, f32, u64 = types.int64, types.float32, types.uint64
    mm = (f2, f2, f2, f1, i64, i64, i64, i64)
    for form in cuda_matmul.FORMS:  # every registered version and declared configuration
        for name, v in cuda_matmul.VERSIONS.items():
            for config in v.configs:
                yield (f"{cuda_matmul.config_name(name, config)} {form}",
                       v.kernel(form, dict(config)), mm)
    nn, up = cuda_nn, cuda_update
    yield "sigmoid_backward", nn.sigmoid_backward_kernel, (f1, f1, f1)
    yield "relu_backward", nn.relu_backward_kernel, (f1, f1, f1)
    yield "mul", nn.mul_kernel, (f1, f1, f1)
    yield "bias_grad", nn.bias_grad_kernel, (f2, f1)
    yield "softmax_xent", nn.softmax_cross_entropy_kernel, (f2, i1, f2, f1, i64)
    yield "quadratic", nn.quadratic_loss_kernel, (f2, f2, f2, f1, i64)
    yield "dropout", nn.dropout_kernel, (f1, f1, f1, u64, u64, f32)
    yield "gather float", nn.gather_rows_kernel, (f2, i1, f2)
    yield "gather int", nn.gather_rows_kernel, (i2, i1, i2)
    yield "conv2d", nn.conv2d_kernel, (f4, f4, f1, f4)
    yield "conv2d dw", nn.conv2d_grad_weights_kernel, (f4, f4, f4, f1)
    yield "conv2d dx", nn.conv2d_grad_input_kernel, (f4, f4, f4)
    yield "maxpool2", nn.maxpool2_kernel, (f4, f4, i8x4)
    yield "maxpool2 bw", nn.maxpool2_backward_kernel, (f4, i8x4, f4)
    yield "sgd", up.sgd_kernel, (f1, f1, f32)
    yield "momentum", up.momentum_kernel, (f1, f1, f1, f32, f32, f32)
    yield "adam", up.adam_kernel, (f1, f1, f1, f1) + (f32,) * 8
    for name, (hidden, act, out_sigmoid, quad, mom) in {
            "nielsen": (30, "sigmoid", True, True, False),
            "mlp": (128, "relu", False, False, True)}.items():
        kernel = cuda_epoch.epoch_kernel(hidden, act, out_sigmoid, quad, mom)
        yield f"epoch {name}", kernel, (f2, f2 if quad else i1, i1, i1, f1, f1, f2, f2, f2, f2,
                                        f1, f32, f32, f32)


def main():
    bad = 0
    for name, kernel, sig in jobs():
        try:
            ptx, _ = compile_ptx(kernel.py_func, sig, cc=(9, 0))
        except Exception as e:
            bad += 1
            print(f"FAIL {name}: {type(e).__name__}: {str(e)[:2000]}")
            continue
        spills = ptx.count("ld.local") + ptx.count("st.local")
        bad += spills > 0
        print(f"{'ok  ' if not spills else 'SLOW'} {name:18s} {len(ptx):7d} chars of PTX"
              + (f", {spills} local-memory accesses" if spills else ""))
    return bad


if __name__ == "__main__":
    sys.exit(main())
