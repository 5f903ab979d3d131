"""The real-GPU measurements of the Numba CUDA work, in one script:

  1. matmul: every numba-cuda version, in the three forms, against cuBLAS
     (torch.matmul, else CuPy) with TF32 off, and cuBLAS with TF32 as its own
     line; 4096³ is the target shape (numba-cuda >= 50 % of cuBLAS fp32).
  2. epochs: nielsen at batch 10 (numba-cuda-epoch, numba-cuda vs torch-cuda
     eager; target epoch kernel >= 5x) and mlp at batch 128 (numba-cuda vs
     torch-cuda; target >= 1.0x), on synthetic MNIST-shaped data.
  3. adam: the one-launch Adam update against the memory-bandwidth floor
     (28 bytes per parameter over the measured device-to-device copy
     bandwidth; target within 1.5x).

Everything is validated before it is timed (a failed check is written, not
timed). GPU times come from CUDA events around launches on device-resident
data; epochs are wall time with a synchronize, as the harness takes them.
One JSON file per section goes into --out (at most 8 files, what the device
tool copies back).

    python -m bench.gpu_bench --out $OUT            # on a real GPU
    NUMBA_ENABLE_CUDASIM=1 python -m bench.gpu_bench --smoke --out /tmp/x
--smoke runs tiny shapes; under the simulator its times are meaningless and
are marked ``"simulated": true`` (it only proves the script runs).
"""
import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_bench", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for the JSON results files")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one repeat: a quick run")
    p.add_argument("--repeats", type=int, default=10, help="timed samples per measurement")
    p.add_argument("--sections", default="matmul,epochs,adam",
                   help="comma-separated subset of matmul,epochs,adam")
    args = p.parse_args(argv)
    unknown = set(args.sections.split(",")) - {"matmul", "epochs", "adam"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


# -- timing ------------------------------------------------------------------------------
def device_seconds(fn, repeats, inner=1):
    """Per-call seconds of ``fn`` (which only queues GPU work), one sample per repeat
    of ``inner`` calls, from CUDA events; wall time under the simulator."""
    from numba import cuda
    from kernels.cuda_common import SIMULATOR
    fn()   # warm: compilation and first-touch outside the clock
    cuda.synchronize()
    samples = []
    for _ in range(repeats):
        if SIMULATOR:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
            continue
        start, stop = cuda.event(), cuda.event()
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(cuda.event_elapsed_time(start, stop) / 1e3 / inner)
    return samples


def summary(samples):
    return {"samples_s": samples, "median_s": float(np.median(samples)),
            "min_s": float(np.min(samples))}


def torch_cuda():
    """torch with a CUDA device, or None."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


# -- 1. matmul ----------------------------------------------------------------------------------
def cublas_matmul(form, a, b, tf32):
    """A callable queueing cuBLAS's product of the same device arrays, or (None, why)."""
    torch = torch_cuda()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
        ta = ta.T if form == "tn" else ta
        tb = tb.T if form == "nt" else tb
        out = torch.empty((ta.shape[0], tb.shape[1]), device="cuda")
        return (lambda: torch.matmul(ta, tb, out=out)), out, "torch.matmul"
    try:
        import cupy
    except ImportError:
        return None, None, "neither torch with CUDA nor CuPy is installed"
    # CuPy uses TF32 only when CUPY_TF32=1 is set before import: no per-call switch.
    if tf32 != (os.environ.get("CUPY_TF32") == "1"):
        return None, None, "CuPy's TF32 mode is fixed by CUPY_TF32 at import"
    ca, cb = cupy.asarray(a), cupy.asarray(b)
    ca = ca.T if form == "tn" else ca
    cb = cb.T if form == "nt" else cb
    out = cupy.empty((ca.shape[0], cb.shape[1]), cupy.float32)
    return (lambda: cupy.matmul(ca, cb, out=out)), out, "cupy.matmul"


def bench_matmul(args):
    from numba import cuda
    from kernels import cuda_matmul
    shapes = [(7, 5, 33)] if args.smoke else [(1024, 1024, 1024), (4096, 4096, 4096)]
    check_shapes = [(7, 5, 33)] if args.smoke else [(7, 5, 33), (257, 129, 65), (33, 3, 40)]
    # The simulator needs a second or more per launch: the smoke run does A·B only.
    families = cuda_matmul.FAMILIES[:1] if args.smoke else cuda_matmul.FAMILIES
    rows = []
    for family in families:
        form = family.name.rsplit("_", 1)[1]
        checks = {v: family.validate(check_shapes, versions=[v]) for v in family.versions}
        for m, n, k in shapes:
            rng = np.random.default_rng(0)
            a, b = family.make_inputs((m, n, k), np.dtype(np.float32), rng)
            da, db = cuda.to_device(a), cuda.to_device(b)
            want = family.reference(a.astype(np.float64), b.astype(np.float64))
            flops = 2.0 * m * n * k
            for version in family.versions:
                row = {"form": form, "shape": [m, n, k], "impl": f"numba-cuda {version}"}
                bad = [c for c in checks[version] if not c.ok]
                out = cuda.device_array((m, n), np.float32)
                try:
                    cuda_matmul.launch(version, form, da, db, out=out)
                    err = float(np.max(np.abs(out.copy_to_host() - want)) / max(1.0, np.max(np.abs(want))))
                except Exception as e:
                    bad.append(f"{type(e).__name__}: {e}")
                    err = float("nan")
                row["max_rel_error"] = err
                if bad or not err <= 1e-4:
                    rows.append(row | {"status": "invalid", "error": str(bad or f"error {err:.3g}")})
                    continue
                s = device_seconds(lambda: cuda_matmul.launch(version, form, da, db, out=out),
                                   args.repeats)
                rows.append(row | {"status": "ok", **summary(s),
                                   "gflops": flops / np.median(s) / 1e9})
            for tf32 in (False, True):
                fn, out, how = cublas_matmul(form, a, b, tf32)
                row = {"form": form, "shape": [m, n, k], "tf32": tf32,
                       "impl": "cuBLAS" + (" (TF32)" if tf32 else " (fp32, TF32 off)")}
                if fn is None:
                    rows.append(row | {"status": "unavailable", "error": how})
                    continue
                fn()
                got = out.cpu().numpy() if hasattr(out, "cpu") else out.get()
                err = float(np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want))))
                ok = err <= (5e-2 if tf32 else 1e-4)
                if not ok:
                    rows.append(row | {"status": "invalid", "max_rel_error": err})
                    continue
                s = device_seconds(fn, args.repeats)
                rows.append(row | {"status": "ok", "via": how, "max_rel_error": err, **summary(s),
                                   "gflops": flops / np.median(s) / 1e9})
    best = {}
    for r in rows:
        if r["status"] == "ok":
            key = (r["form"], tuple(r["shape"]))
            if r["impl"].startswith("numba-cuda"):
                best.setdefault(key, {})["numba"] = max(best.get(key, {}).get("numba", 0), r["gflops"])
            elif not r["tf32"]:
                best.setdefault(key, {})["cublas"] = r["gflops"]
    ratios = [{"form": f, "shape": list(s), "best_numba_over_cublas_fp32": v["numba"] / v["cublas"]}
              for (f, s), v in best.items() if "numba" in v and "cublas" in v]
    return {"rows": rows, "ratios": ratios, "target": "4096^3: numba-cuda >= 0.5x cuBLAS fp32"}


# -- 2. epochs -------------------------------------------------------------------------------------
def bench_epochs(args):
    from bench.backends import get_backend
    from bench.validate import validate, validation_data
    from models import config_for, get_network
    from models.train import epoch_batches
    n = 2 if args.smoke else 50_000
    epochs = 1 if args.smoke else 3
    plan = [("nielsen", 2 if args.smoke else 10, ["numba-cuda-epoch", "numba-cuda", "torch-cuda"]),
            ("mlp", 2 if args.smoke else 128, ["numba-cuda", "numba-cuda-epoch", "torch-cuda"])]
    rows = []
    for model, batch, backends in plan:
        net = get_network(model)
        config = dict(config_for(net), batch_size=batch)
        x, y, _ = validation_data(net, n)
        for name in backends:
            row = {"model": model, "batch_size": batch, "backend": name, "train_samples": n}
            backend = get_backend(name)
            ok, why = backend.available()
            if not ok:
                rows.append(row | {"status": "unavailable", "error": why})
                continue
            check = validate(name, model, steps=1 if args.smoke else 3, batch_size=batch)
            row["validation"] = {"ok": check.ok, "max_error": check.max_error}
            if not check.ok:
                rows.append(row | {"status": "invalid", "error": check.error})
                continue
            trainer = backend.make_trainer(net, net.init_params(0), config, 0)
            t0 = time.perf_counter()
            trainer.set_data(x, y)
            trainer.synchronize()
            row["set_data_s"] = time.perf_counter() - t0
            trainer.train_epoch(epoch_batches(n, batch, 0, 0))   # warm-up: compilation
            trainer.synchronize()
            samples, loss = [], None
            for epoch in range(1, 1 + epochs):
                batches = epoch_batches(n, batch, 0, epoch)
                t0 = time.perf_counter()
                loss = trainer.train_epoch(batches)
                trainer.synchronize()
                samples.append(time.perf_counter() - t0)
            rows.append(row | {"status": "ok", **summary(samples), "loss": loss})
    med = {(r["model"], r["backend"]): r["median_s"] for r in rows if r["status"] == "ok"}
    speedups = {}
    for model, backend in [("nielsen", "numba-cuda-epoch"), ("nielsen", "numba-cuda"),
                           ("mlp", "numba-cuda"), ("mlp", "numba-cuda-epoch")]:
        if (model, backend) in med and (model, "torch-cuda") in med:
            speedups[f"{model} {backend} vs torch-cuda"] = med[model, "torch-cuda"] / med[model, backend]
    return {"rows": rows, "speedups": speedups, "epochs_timed": epochs,
            "targets": ["nielsen b10: numba-cuda-epoch >= 5x torch-cuda",
                        "mlp b128: numba-cuda >= 1.0x torch-cuda"]}


# -- 3. Adam vs the bandwidth floor ---------------------------------------------------------------------
def bench_adam(args):
    from numba import cuda
    from bench.backends.numpy_backend import NumpyOps
    from kernels import cuda_update
    sizes = [1000] if args.smoke else [1_111_946, 1 << 24, 1 << 26]
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        host = [rng.standard_normal(n).astype(np.float32) for _ in range(3)] + [np.zeros(n, np.float32)]
        p, g, m, v = (cuda.to_device(a) for a in host)
        ref = [a.copy() for a in host]
        NumpyOps().adam_update(ref[0], ref[1], ref[2], ref[3], 1, 1e-4, 0.9, 0.999, 1e-8)
        cuda_update.adam_update(p, g, m, v, 1, 1e-4, 0.9, 0.999, 1e-8)
        err = max(float(np.max(np.abs(d.copy_to_host() - r))) for d, r in
                  zip((p, m, v), (ref[0], ref[2], ref[3])))
        row = {"params": n, "bytes_per_update": 28 * n, "max_abs_error": err}
        if not err <= 1e-6:
            rows.append(row | {"status": "invalid"})
            continue
        src, dst = cuda.device_array(7 * n, np.float32), cuda.device_array(7 * n, np.float32)
        copy = device_seconds(lambda: dst.copy_to_device(src), args.repeats, inner=5)
        bandwidth = 2 * 28 * n / np.median(copy)   # a copy reads and writes its bytes
        adam = device_seconds(lambda: cuda_update.adam_update(p, g, m, v, 2, 1e-4, 0.9, 0.999, 1e-8),
                              args.repeats, inner=5)
        floor = 28 * n / bandwidth
        rows.append(row | {"status": "ok", "adam": summary(adam),
                           "copy_bandwidth_gb_s": bandwidth / 1e9, "floor_s": floor,
                           "adam_over_floor": float(np.median(adam)) / floor})
    return {"rows": rows, "target": "Adam launch <= 1.5x the bandwidth floor"}


def environment(args):
    from numba import __version__ as numba_version, cuda
    from kernels.cuda_common import SIMULATOR
    env = {"started": datetime.now(timezone.utc).isoformat(), "smoke": args.smoke,
           "simulated": SIMULATOR, "numba": numba_version, "numpy": np.__version__,
           "python": platform.python_version(), "host": platform.node(), "gpu": None}
    if not SIMULATOR:
        dev = cuda.get_current_device()
        env["gpu"] = {"name": dev.name.decode() if isinstance(dev.name, bytes) else dev.name,
                      "compute_capability": list(dev.compute_capability),
                      "multiprocessors": dev.MULTIPROCESSOR_COUNT}
    torch = torch_cuda()
    env["torch"] = torch.__version__ if torch else None
    return env


def main(argv=None):
    args = parse_args(argv)
    from kernels.cuda_common import SIMULATOR, gpu_available
    if SIMULATOR:
        # Simulated runs only prove the script works; the backends refuse to be
        # timed on the simulator unless allowed.
        os.environ["MNIST_BENCH_ALLOW_CUDASIM"] = "1"
        if not args.smoke:
            raise SystemExit("the CUDA simulator is on: only --smoke makes sense")
        args.repeats = 1
    else:
        ok, why = gpu_available()
        if not ok:
            raise SystemExit(f"gpu_bench needs a CUDA GPU: {why}")
    os.makedirs(args.out, exist_ok=True)
    env = environment(args)
    sections = {"matmul": bench_matmul, "epochs": bench_epochs, "adam": bench_adam}
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        result = {"environment": env, **sections[name](args),
                  "section_wall_s": None}
        result["section_wall_s"] = time.perf_counter() - t0
        path = os.path.join(args.out, f"gpu_bench_{name}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=float)
        print(f"{name}: {path}")
        for key in ("ratios", "speedups"):
            if result.get(key):
                print(f"  {key}: {json.dumps(result[key], default=float)}")
        if name == "adam":
            for r in result["rows"]:
                print(f"  adam n={r['params']}: {r.get('adam_over_floor', r['status'])}")


if __name__ == "__main__":
    main()
