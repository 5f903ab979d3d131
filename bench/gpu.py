"""`mnist-bench gpu`: the GPU measurements, as ordinary cells of one results run
(kernel and epoch kinds; the run's machine names the GPU), so `report` and
`compare` treat a GPU like any other machine.

Sections (all by default):
- kernels: every CUDA kernel family (kernels/cuda_*.py FAMILIES) -- each matmul
  version and declared tile configuration, cuBLAS (TF32 off, and a TF32 line
  that says so), the dense, loss, conv and update kernels (the report sets the
  update kernels against the machine's bandwidth ceiling where one was measured);
- epochs: nielsen (batch 10) and mlp (batch 128) on every GPU backend, cnn
  (batch 256) on those that train it.

Kernel cells are timed with the core's CUDA timer (events, the L2 cache flushed
before each sample); epochs as every epoch is, wall time with a final
synchronisation. Everything is validated before it is timed.

Without a GPU the command says why and stops. Under the CUDA simulator
(NUMBA_ENABLE_CUDASIM=1) ``--smoke`` checks every version on small shapes and
stores the results as unavailable ("simulator: correctness only"): simulated
kernels are never timed.
"""
import argparse
import os
import sys

SECTIONS = ("kernels", "epochs")
EPOCH_CELLS = [("nielsen", 10), ("mlp", 128), ("cnn", 256)]
GPU_BACKENDS = ("numba-cuda", "numba-cuda-epoch", "torch-cuda", "torch-ops-cuda",
                "torch-cuda-graphs", "torch-cuda-tf32")
SMOKE_EPOCH_SAMPLES = 64


def library_missing(library):
    from .kernel_sweep import library_missing as missing
    return missing(library)


def add_arguments(parser):
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--families", default=None, help="CUDA kernel families (default: all)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per cell (default 15)")
    parser.add_argument("--repeats", type=int, dest="rounds", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--train-samples", type=int, default=50_000,
                        help="images per epoch of the epoch cells (synthetic, default 50000)")
    parser.add_argument("--smoke", action="store_true",
                        help="small shapes: under the CUDA simulator, a correctness check only")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")


def smoke_check(families, log=print) -> list:
    """Simulator: every version of every CUDA family on its two smallest check
    shapes (the simulator runs each CUDA thread as a Python thread; the tests
    check each kernel on more); cells stored unavailable with the outcome."""
    cells = []
    for fam in families.values():
        for version in fam.versions.values():
            if library_missing(version.library) or (version.available and not version.available()[0]):
                continue
            checks = fam.validate(shapes=fam.check_shapes[:2], versions=[version.name])
            bad = next((c for c in checks if not c.ok), None)
            cells.append({"kind": "kernel", "model": fam.name, "backend": version.name,
                          "shape": list(fam.check_shapes[1]), "dtype": "float32", "threads": 1,
                          "device": "cuda", "status": "invalid" if bad else "unavailable",
                          "validation": {"ok": bad is None, "shapes": len(checks)},
                          "error": bad.error if bad else "CUDA simulator: correctness only, not timed"})
            log(f"  {fam.name}.{version.name}: {'FAIL ' + bad.error if bad else 'matches the reference'}")
    return cells


def main(args):
    from ..kernels.cuda_common import SIMULATOR, gpu_available
    from .kernel_sweep import cells_of, discover_families, run_groups, select
    from .plan import csv
    sections = csv(args.sections, "sections")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"--sections: unknown {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    cuda = {n: f for n, f in discover_families().items() if f.device == "cuda"}
    if args.families:
        chosen = csv(args.families, "families")
        missing = [n for n in chosen if n not in cuda]
        if missing:
            raise ValueError(f"unknown CUDA kernel family {missing[0]!r}; choose from {', '.join(cuda)}")
        cuda = {n: cuda[n] for n in chosen}
    if SIMULATOR:
        if not args.smoke:
            raise ValueError("the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): only --smoke, a "
                             "correctness check, makes sense")
        from .store import RunWriter, default_header
        writer = RunWriter(args.results_dir, default_header({"source": "mnist-bench gpu --smoke",
                                                             "simulator": True}))
        for cell in smoke_check(cuda, log=lambda m: print(m, file=sys.stderr)):
            writer.put(cell)
        writer.close("complete")
        bad = [c for c in writer.cells if c["status"] == "invalid"]
        print(f"results: {writer.path} ({len(writer.cells)} versions checked on the simulator, "
              f"{len(bad)} wrong)")
        return 1 if bad else 0
    ok, why = gpu_available()
    if not ok:
        raise ValueError(f"no GPU to measure: {why}")
    groups = []
    if "kernels" in sections:
        plan = select(cuda, list(cuda), None, None, default_device="cuda")
        if args.smoke:
            plan = [(f, vs, [f.check_shapes[-1]], ds) for f, vs, _, ds in plan]
        groups += cells_of(plan, [1])
    writer, status = run_groups(groups, {"source": "mnist-bench gpu", "sections": sections,
                                         "rounds": args.rounds}, args.results_dir, args.rounds) \
        if groups else (None, 0)
    if "epochs" in sections and status == 0:
        status = run_epochs(args, writer)
    return status


def run_epochs(args, writer):
    """The GPU epoch cells, through `mnist-bench run` on synthetic data."""
    from . import harness
    n = SMOKE_EPOCH_SAMPLES if args.smoke else args.train_samples
    status = 0
    for model, batch in EPOCH_CELLS:
        status = harness.run_sweep({
            "models": model, "backends": ",".join(GPU_BACKENDS), "batch_sizes": str(batch),
            "dataset": "synthetic", "train_limit": n, "rounds": args.rounds,
            "threads": str(os.cpu_count()), "results_dir": args.results_dir}) or status
    return status
