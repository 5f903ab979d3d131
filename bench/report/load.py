"""Loading runs for the report: the store's cells with the report's own columns.

``machine_label`` names a machine (host, CPU, cores, GPU); ``superseded`` marks a
cell whose coordinates a newer run on the same machine measured again;
``usable`` is ok and not superseded; ``flags`` is what a table shows beside a
cell. Cells of runs written before intervals were stored get theirs computed
from their samples here.
"""
import math
import os

import numpy as np

from ..compare import MATCH_KEY, match_value
from ..stats import median_ci
from ..store import read_results


def int_or_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def shape_label(shape):
    return "x".join(str(int(d)) for d in shape) if isinstance(shape, (list, tuple, np.ndarray)) else ""


_ISA_FLAGS = (("avx512f", "AVX-512", "avx512"), ("avx2", "AVX2", "avx2"), ("asimd", "NEON", "neon"),
              ("neon", "NEON", "neon"))


def _widest_isa(machine: dict):
    """(the report's name, the kernels' name) of the machine's widest vector ISA, or None."""
    isa_flags = set(machine.get("isa_flags") or [])
    return next(((name, kernels) for flag, name, kernels in _ISA_FLAGS if flag in isa_flags), None)


def machine_label(machine: dict) -> str:
    """The name the user gave (``--machine``, as asv's machine.json), else the CPU
    model with the host's LLVM CPU name, its widest vector ISA and its cores (and
    the GPU): never the hostname alone, which VMs share ("vm"). A VM's CPU model
    can be as bare as "AMD EPYC" on a Zen 4 and a Zen 5 alike: the LLVM CPU name
    keeps them apart, and with them each one's measured peak."""
    gpu = machine.get("gpu") or {}
    gpu_text = f", {gpu['name']}" if gpu.get("name") else ""
    if machine.get("name"):
        return f"{machine['name']}{gpu_text}"
    cpu = machine.get("cpu_model") or "CPU not recorded"
    if machine.get("llvm_cpu") and machine["llvm_cpu"] not in ("generic", "host"):
        cpu += f" ({machine['llvm_cpu']})"
    isa = _widest_isa(machine)
    cores = f", {machine['cores']} cores" if machine.get("cores") else ""
    return f"{cpu}{', ' + isa[0] if isa else ''}{cores}{gpu_text}"


def name_host_cpus(runs, cells):
    """Give the machine of each run stored before machine_info recorded the
    host's LLVM CPU (``llvm_cpu``) the name a Numba cell of that run compiled for,
    where that cell's build was the host's own widest ISA (an AVX2 build on an
    AVX-512 host names haswell, not the host). In the loaded headers only; the
    store is not touched."""
    if "env.kernels" not in cells:
        return
    kernels_by_run = {}
    for run_id, kernels in zip(cells["run_id"], cells["env.kernels"]):
        if isinstance(kernels, dict) and kernels.get("cpu_name"):
            kernels_by_run.setdefault(run_id, []).append(kernels)
    for header in runs["header"] if "header" in runs else []:
        machine = header.get("machine")
        if not machine or machine.get("llvm_cpu"):
            continue
        isa = _widest_isa(machine)
        name = next((k["cpu_name"] for k in kernels_by_run.get(header["run_id"], [])
                     if isa and k.get("isa") == isa[1]), None)
        if name:
            machine["llvm_cpu"] = name


def flags(cells):
    """Each cell's marks for tables, from its status and the noisy / synthetic /
    superseded columns."""
    return [", ".join(f for f, on in (("INVALID", s == "invalid"), ("ERROR", s == "error"),
                                      ("unavailable", s == "unavailable"), ("noisy", n),
                                      ("synthetic data", syn), ("superseded", sup)) if on)
            for s, n, syn, sup in zip(cells["status"], cells["noisy"], cells["synthetic"],
                                      cells["superseded"])]


def _interval(samples, low, high):
    if isinstance(low, float) and not math.isnan(low):
        return low, high
    if isinstance(samples, list) and len([s for s in samples if s is not None]) > 1:
        lo, hi, _ = median_ci([s for s in samples if s is not None])
        return lo, hi
    return np.nan, np.nan


def load(result_paths, skip_bad=False):
    """(runs, cells, machines by run id) with the report's columns."""
    import pandas as pd
    runs, cells = read_results(list(result_paths), skip_bad)
    if cells.empty:
        raise ValueError(f"no cells in {', '.join(map(str, result_paths))}: nothing to report")
    name_host_cpus(runs, cells)
    runs = runs.sort_values("started").reset_index(drop=True)
    machines = {h["run_id"]: h.get("machine") or {} for h in runs["header"]}
    order = {run_id: i for i, run_id in enumerate(runs["run_id"])}
    cells = cells.copy()
    # object columns: integer coordinates stay integers next to the None of kernel cells
    for column in ("batch_size", "threads", "group"):
        cells[column] = pd.Series([int_or_none(v) for v in cells[column]], index=cells.index,
                                  dtype=object)
    cells["shape_label"] = [shape_label(s) for s in cells["shape"]]
    cells["machine_label"] = [machine_label(machines[r]) for r in cells["run_id"]]
    # a machine is its label everywhere in the report (which run supersedes which,
    # settings, tables): the stored hostname is one name for every VM ("vm")
    cells["hostname"] = cells["machine"]
    cells["machine"] = cells["machine_label"]
    cells["run_order"] = [order[r] for r in cells["run_id"]]
    cells["device"] = [d if isinstance(d, str) else "cpu" for d in cells["device"]]
    quartiles = [np.percentile([s for s in v if s is not None], [25, 75])
                 if isinstance(v, list) and any(s is not None for s in v) else (np.nan, np.nan)
                 for v in cells["samples_s"]]
    cells["q1_s"], cells["q3_s"] = [q[0] for q in quartiles], [q[1] for q in quartiles]
    intervals = [_interval(s, lo, hi) for s, lo, hi in
                 zip(cells["samples_s"], cells["ci_low_s"], cells["ci_high_s"])]
    cells["ci_low_s"], cells["ci_high_s"] = [i[0] for i in intervals], [i[1] for i in intervals]
    cells["noisy"] = cells["noisy"].fillna(False).astype(bool)
    cells["synthetic"] = cells["synthetic"].fillna(False).astype(bool)
    keys = [(m,) + tuple(match_value(row[k]) for k in MATCH_KEY)
            for m, (_, row) in zip(cells["machine"], cells.iterrows())]
    newest = {}
    for key, run_order in zip(keys, cells["run_order"]):
        newest[key] = max(newest.get(key, -1), run_order)
    cells["superseded"] = [ro < newest[k] for k, ro in zip(keys, cells["run_order"])]
    cells["usable"] = (cells["status"] == "ok") & ~cells["superseded"]
    cells["flags"] = flags(cells)
    return runs, cells, machines


def default_results(results_dir="results") -> list:
    """The newest run of each machine for each kind of cell (epoch, tta, kernel) and
    device (a CPU kernel sweep and a GPU one are separate runs). Runs still marked
    ``running`` count only where no finished one has that kind."""
    runs_dir = os.path.join(results_dir, "runs")
    if not os.path.isdir(runs_dir) or not any(f.endswith(".jsonl") for f in os.listdir(runs_dir)):
        raise ValueError(f"no run files in {runs_dir}: run `mnist-bench run` first or name "
                         f"result files")
    runs, cells = read_results([runs_dir])
    if cells.empty:
        return list(runs["path"])
    name_host_cpus(runs, cells)
    # sort key: finished runs after running ones, then by start time; the last wins
    order = {r: (status != "running", started)
             for r, status, started in zip(runs["run_id"], runs["status"], runs["started"])}
    labels = {h["run_id"]: machine_label(h.get("machine") or {}) for h in runs["header"]}
    cells = cells.assign(order=[order[r] for r in cells["run_id"]],
                         machine=[labels[r] for r in cells["run_id"]],  # not the hostname
                         device=[d if isinstance(d, str) else "cpu" for d in cells["device"]])
    newest = cells.sort_values("order").groupby(["machine", "kind", "device"])["run_id"].last()
    paths = dict(zip(runs["run_id"], runs["path"]))
    return sorted({paths[r] for r in newest})
