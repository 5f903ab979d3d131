"""`mnist-bench import`: other tools' result files as ordinary runs of the store.

- a pytest-benchmark ``--benchmark-json`` file made by the bench/ suites: one run,
  each benchmark a cell with the coordinates the suites put in ``extra_info``;
- the JSON files the GPU script of an earlier version wrote (results/gpu/:
  ``gpu_bench_matmul.json``, ``gpu_bench_epochs.json``, ``gpu_bench_adam.json``,
  ``sweep.json``): one run per file, matmul versions and cuBLAS as kernel cells
  of the cuda_matmul families, epochs as epoch cells, the Adam update and the
  device's copy bandwidth as kernel cells. Those files do not record the host
  CPU, so ``--machine-from RUN`` takes the machine record of a run made in the
  same session (the original files stay as they are).

Results that carry no validation are skipped, never stored as validated times.
"""
import json
import os


from .stats import NOISY_IQR_RATIO, summarize
from .store import KINDS, RunWriter, check_cell, json_safe, read_run, stored_form


def import_pytest_benchmark(json_path, results_dir="results") -> tuple:
    """Store the benchmarks of a pytest-benchmark ``--benchmark-json`` file made by
    the bench/ suites as one run; returns (run file path, cells stored, skipped names).
    Benchmarks without the suites' extra_info (kind, model, backend, validation)
    are not ours and are skipped, never stored as validated times."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"{json_path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{json_path}: not a pytest-benchmark JSON file (no 'benchmarks')")
    if not isinstance(data["benchmarks"], list) or not all(isinstance(b, dict) for b in data["benchmarks"]):
        raise ValueError(f"{json_path}: 'benchmarks' is not a list of benchmark objects")
    info = data.get("machine_info") or {}
    ours = info.get("mnist_bench") or {}  # what bench/conftest.py adds
    commit = data.get("commit_info") or {}
    cpu = info.get("cpu") or {}
    header = {
        "command": ["pytest-benchmark", os.path.abspath(json_path)],
        "git": {"commit": commit.get("id"), "dirty": commit.get("dirty")},
        "machine": ours.get("machine") or {"hostname": info.get("node"),
                                           "cpu_model": cpu.get("brand_raw"),
                                           "cores": cpu.get("count"), "isa_flags": [],
                                           "memory_gb": None, "gpu": None},
        "versions": ours.get("versions") or {"python": info.get("python_version")},
        "settings": {"source": "pytest-benchmark", "file": os.path.abspath(json_path),
                     "datetime": data.get("datetime"),
                     "pytest_benchmark_version": data.get("version")},
    }
    cells, skipped = [], []
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info") or {}
        if extra.get("kind") not in KINDS or "validation" not in extra:
            skipped.append(bench.get("fullname") or bench.get("name"))
            continue
        stats = bench.get("stats") or {}
        median = stats.get("median")
        name = bench.get("fullname") or bench.get("name")
        if not isinstance(median, (int, float)) or isinstance(median, bool) or not median > 0:
            raise ValueError(f"{json_path}: benchmark {name!r} has no median time (stats.median "
                             f"{median!r})")
        data_ = stats.get("data")
        if data_ is not None and (not isinstance(data_, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in data_)):
            raise ValueError(f"{json_path}: benchmark {name!r}: stats.data is not a list of times")
        cell = {k: v for k, v in extra.items() if k not in ("samples",)}
        cell.update({"status": "ok", "source": "pytest-benchmark", "name": bench.get("fullname"),
                     # pytest-benchmark keeps every round only with --benchmark-save-data
                     "samples_s": stats.get("data") or [median],
                     "median_s": median, "iqr_s": stats.get("iqr"),
                     "noisy": bool(median and stats.get("iqr", 0) / median > NOISY_IQR_RATIO),
                     "rounds": stats.get("rounds")})
        if median:
            if extra.get("flops"):
                cell["gflops"] = extra["flops"] / median / 1e9
            if extra.get("bytes"):
                cell["gbytes_per_s"] = extra["bytes"] / median / 1e9
            if extra.get("samples"):
                cell["samples_per_s"] = extra["samples"] / median
        cells.append(cell)
    if not cells:
        raise ValueError(f"{json_path}: none of its {len(data['benchmarks'])} benchmarks comes "
                         f"from the bench/ suites (pytest bench/ --benchmark-only)")
    return write_whole(results_dir, header, cells, json_path) + (skipped,)


def write_whole(results_dir, header, cells, source) -> tuple:
    """One run file of ``cells``, every one checked before anything is written: an
    import is whole or nothing (a bad cell names ``source`` and writes nothing).
    Returns (path, cells stored)."""
    ready = []
    for i, cell in enumerate(cells):
        cell = json_safe({"type": "cell", **stored_form(cell)})
        try:
            check_cell(cell)
        except ValueError as e:
            raise ValueError(f"{source}: entry {i + 1}: {e}; nothing imported") from None
        ready.append(cell)
    writer = RunWriter(results_dir, header)
    writer.cells = ready
    writer.close("complete")
    return writer.path, len(ready)


# -- the files of the earlier GPU script ------------------------------------------------

GPU_FILES = ("gpu_bench_matmul", "gpu_bench_epochs", "gpu_bench_adam", "sweep")
CUBLAS = {"cuBLAS (fp32, TF32 off)": "cublas_fp32", "cuBLAS (TF32)": "cublas_tf32"}


def _gpu_cell(base, samples, validation, **extra):
    cell = dict(base, status="ok", validation=validation, samples_s=list(samples),
                source="gpu_bench import", device="cuda", **extra)
    cell.update(summarize(samples))
    if cell.get("flops"):
        cell["gflops"] = cell["flops"] / cell["median_s"] / 1e9
    if cell.get("bytes"):
        cell["gbytes_per_s"] = cell["bytes"] / cell["median_s"] / 1e9
    return cell


def _invalid(base, row):
    return dict(base, status="invalid", device="cuda", source="gpu_bench import",
                validation={"ok": False, "max_error": row.get("max_rel_error")},
                error=str(row.get("error") or f"error {row.get('max_rel_error')}"))


def gpu_matmul_cells(rows):
    for r in rows:
        m, n, k = r["shape"]
        version = CUBLAS.get(r["impl"]) or r["impl"].replace("numba-cuda ", "")
        base = {"kind": "kernel", "model": f"cuda_matmul_{r['form']}", "backend": version,
                "shape": [m, n, k], "dtype": "float32", "threads": 1,
                "flops": 2.0 * m * n * k, "bytes": 4.0 * (m * k + k * n + m * n),
                "library": "torch" if version.startswith("cublas") else "cuda"}
        if r["status"] != "ok":
            yield _invalid(base, r) if r["status"] == "invalid" else dict(
                base, status=r["status"], error=r.get("error") or r["status"])
            continue
        yield _gpu_cell(base, r["samples_s"], {"ok": True, "max_error": r["max_rel_error"]},
                        timer="cuda events (L2 not flushed)")


def gpu_epoch_cells(rows):
    for r in rows:
        base = {"kind": "epoch", "model": r["model"], "backend": r["backend"],
                "batch_size": r["batch_size"], "threads": None, "dataset": "synthetic",
                "synthetic": True, "train_samples": r["train_samples"]}
        if r["status"] != "ok":
            yield dict(base, status=r["status"], error=r.get("error") or r["status"],
                       validation=r.get("validation"))
            continue
        cell = _gpu_cell(base, r["samples_s"], r["validation"], loss=r.get("loss"),
                         set_data_s=r.get("set_data_s"))
        cell["samples_per_s"] = r["train_samples"] / cell["median_s"]
        yield cell


def gpu_adam_cells(rows):
    for r in rows:
        n = r["params"]
        base = {"kind": "kernel", "model": "cuda_adam", "backend": "v1_grid_stride", "shape": [n],
                "dtype": "float32", "threads": 1, "bytes": 28.0 * n, "library": "cuda"}
        if r["status"] != "ok":
            yield _invalid(base, r)
            continue
        yield _gpu_cell(base, r["adam"]["samples_s"], {"ok": True, "max_error": r["max_abs_error"]},
                        timer="cuda events (L2 not flushed)")
        # The copy's own samples were not kept: one sample, the time the stored
        # bandwidth implies for copying 7n floats (28n bytes read, 28n written).
        seconds = 2 * 28.0 * n / (r["copy_bandwidth_gb_s"] * 1e9)
        yield _gpu_cell({"kind": "kernel", "model": "cuda_copy", "backend": "device_to_device",
                         "shape": [7 * n], "dtype": "float32", "threads": 1,
                         "bytes": 56.0 * n, "library": "cuda"}, [seconds],
                        {"ok": True, "max_error": 0.0},
                        note="median only: the earlier script kept no copy samples")


def gpu_sweep_cells(rows):
    for r in rows:
        m, n, k = r["shape"]
        cfg = ",".join(f"{key}={value}" for key, value in r["config"].items())
        base = {"kind": "kernel", "model": "cuda_matmul_nn", "backend": f"{r['version']}[{cfg}]",
                "shape": [m, n, k], "dtype": "float32", "threads": 1, "flops": 2.0 * m * n * k,
                "library": "cuda", "config": r["config"]}
        if "gflops" not in r:
            yield dict(base, status="invalid" if "err" in r else "error", device="cuda",
                       validation={"ok": False, "max_error": r.get("err")},
                       error=r.get("error") or f"error {r.get('err')}")
            continue
        yield _gpu_cell(base, [2.0 * m * n * k / (r["gflops"] * 1e9)],
                        {"ok": True, "max_error": r["err"]}, note="median only: the sweep kept no samples")


def import_gpu_bench(json_path, results_dir="results", machine=None):
    """One run from one file of the earlier GPU script; returns (path, cells)."""
    name = os.path.basename(json_path).rsplit(".", 1)[0]
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"{json_path}: not a JSON file ({e})") from None
    if name == "sweep" and not isinstance(data, list) or name != "sweep" and not (
            isinstance(data, dict) and isinstance(data.get("rows"), list)
            and isinstance(data.get("environment"), dict)):
        raise ValueError(f"{json_path}: not a file of the earlier GPU script (its rows and "
                         f"environment are missing)")
    if name == "sweep":
        rows, env = data, {}
        makers = gpu_sweep_cells
    else:
        rows, env = data["rows"], data["environment"]
        makers = {"gpu_bench_matmul": gpu_matmul_cells, "gpu_bench_epochs": gpu_epoch_cells,
                  "gpu_bench_adam": gpu_adam_cells}[name]
    gpu = env.get("gpu") or {}
    machine = dict(machine or {"hostname": env.get("host"), "cpu_model": None, "cores": None,
                               "isa_flags": [], "memory_gb": None})
    if gpu and not (machine.get("gpu") or {}).get("name"):
        machine["gpu"] = {"name": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
                          "multiprocessors": gpu.get("multiprocessors")}
    header = {"command": ["mnist-bench", "import", os.path.abspath(json_path)],
              "started": env.get("started") or (data[0].get("started") if isinstance(data, list) else None),
              "git": {"commit": None, "dirty": None}, "machine": machine,
              "versions": {k: env.get(k) for k in ("python", "numpy", "numba", "torch")},
              "settings": {"source": "gpu_bench import", "file": os.path.basename(json_path),
                           "started": env.get("started")}}
    try:
        cells = list(makers(rows))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
        raise ValueError(f"{json_path}: not a file of the earlier GPU script ({type(e).__name__}: "
                         f"{e}); nothing imported") from None
    return write_whole(results_dir, header, cells, json_path)


def add_arguments(parser):
    parser.add_argument("json_files", nargs="+", metavar="JSON",
                        help="files written by pytest bench/ --benchmark-json=FILE, or the "
                             "results/gpu/*.json of the earlier GPU script")
    parser.add_argument("--machine-from", default=None, metavar="RUN",
                        help="GPU files: take the machine record of this run file")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")


def main(args):
    for path in args.json_files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
    machine = read_run(args.machine_from)[0].get("machine") if args.machine_from else None
    for path in args.json_files:
        if os.path.basename(path).rsplit(".", 1)[0] in GPU_FILES:
            out, stored = import_gpu_bench(path, args.results_dir, machine)
            print(f"{path}: {stored} cells -> {out}")
            continue
        out, stored, skipped = import_pytest_benchmark(path, args.results_dir)
        print(f"{path}: {stored} benchmarks -> {out}")
        if skipped:
            print(f"  skipped {len(skipped)} benchmarks not from the bench/ suites "
                  f"(no validation recorded): {', '.join(skipped[:5])}"
                  f"{' ...' if len(skipped) > 5 else ''}")
    return 0
