"""The `mnist-bench run` options and the sweep they describe: every option and name
checked, and the datasets loaded, before any work starts; then one cell per
dataset x backend x thread count x model x batch size.
"""
import argparse
import os
import sys

from ..models import NETWORKS, config_for, get_network

MODES = ("throughput", "tta")
# The README's main job: nielsen and mlp across a batch-size sweep on every CPU
# backend this machine has, on a 2,048-image subset. numpy-loop backprops one
# sample at a time, so its epoch time does not depend on the batch size: it is
# timed at each model's write-up batch size only.
QUICK = dict(models="nielsen,mlp", batch_sizes="2,8,32,128,512,1024",
             backends="numpy-loop,numpy,numba,numba-parallel,numba-fused,torch,torch-ops,jax,jax-scan",
             epochs=1, rounds=5, train_limit=2048, processes=1)
BATCH_INDEPENDENT = {"numpy-loop"}
# Every option's default (add_arguments), so a caller may give only some, and so
# --quick can tell an option the user set from one left alone.
DEFAULTS = dict(models="nielsen,mlp", backends="numpy,numpy-loop", batch_sizes=None, threads=None,
                dataset="auto", data_dir=None, mode="throughput", epochs=None, rounds=9,
                processes=3, seeds=None, target_accuracy=0.90, train_limit=None, set=[],
                results_dir="results", machine=None, measure_compile=False, compile_probes=1, quick=False,
                report=None, replay_budget=5.0, oversubscribe=False, format="table", no_download=False)


def add_arguments(parser):
    parser.add_argument("--models", default="nielsen,mlp", help="comma-separated (default nielsen,mlp)")
    parser.add_argument("--backends", default="numpy,numpy-loop",
                        help="comma-separated backend names (see `mnist-bench list`)")
    parser.add_argument("--batch-sizes", default=None,
                        help="comma-separated; 0 = full batch (default: each model's own)")
    parser.add_argument("--threads", default=None,
                        help=f"comma-separated thread counts (default: {os.cpu_count()}, all cores)")
    parser.add_argument("--dataset", default="auto",
                        help="comma-separated: auto (default), mnist, fashion-mnist, synthetic")
    parser.add_argument("--data-dir", default=None, help="a directory with the four IDX files")
    parser.add_argument("--no-download", action="store_true",
                        help="never touch the network: a dataset not on this machine is an error "
                             "(auto falls back to synthetic data, loudly)")
    parser.add_argument("--mode", choices=MODES, default="throughput",
                        help="throughput: time per epoch; tta: time to --target-accuracy")
    parser.add_argument("--epochs", type=int, default=None,
                        help="throughput: epochs per timed sample (default 1); "
                             "tta: most epochs per seed (default: the model's own)")
    parser.add_argument("--rounds", type=int, default=9,
                        help="rounds: timed samples per cell, one per round (default 9)")
    parser.add_argument("--repeats", type=int, dest="rounds", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--processes", type=int, default=3,
                        help="throughput: fresh worker processes per backend in turn, the rounds "
                             "shared among them (default 3; --quick 1)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated init/batch-order seeds (default 0; tta: 0,1,2,3,4)")
    parser.add_argument("--target-accuracy", type=float, default=0.90,
                        help="tta: test accuracy to reach (default 0.90)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a hyperparameter of every model (repeatable)")
    parser.add_argument("--results-dir", default="results", help="results store (default results/)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "markdown", "json"),
                        help="the answer printed at the end: a table (default), csv, markdown or json")
    parser.add_argument("--oversubscribe", action="store_true",
                        help="allow --threads above this machine's cores (every pool then "
                             "competes for them: the timings measure that)")
    parser.add_argument("--machine", default=None, metavar="NAME",
                        help="this machine's name in reports (default: CPU model, ISA and cores)")
    parser.add_argument("--replay-budget", type=float, default=5.0, metavar="SECONDS",
                        help="longest float64 replay of one cell's timed epochs after its rounds "
                             "(default 5; longer ones are skipped and say so, the held-out check "
                             "still runs)")
    parser.add_argument("--measure-compile", action="store_true",
                        help="measure compile times anew instead of reusing the stored ones")
    parser.add_argument("--compile-probes", type=int, default=1, metavar="N",
                        help="compile probes run at once (default 1: a probe's warm-up step "
                             "runs on as many cores as its cell, so probes side by side would "
                             "take cores from each other)")
    parser.add_argument("--quick", action="store_true",
                        help=f"the README's main job: {QUICK['models']} at batch sizes "
                             f"{QUICK['batch_sizes']} on every available CPU backend, "
                             f"{QUICK['train_limit']} training images, {QUICK['rounds']} rounds; "
                             f"then a report")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="write a report of this run into DIR (--quick: results/report)")


def csv(text, kind):
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ValueError(f"--{kind}: empty list")
    return items


def ints(text, kind, minimum):
    try:
        values = [int(s) for s in csv(text, kind)]
    except ValueError:
        raise ValueError(f"--{kind}: {text!r} is not a comma-separated list of integers") from None
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"--{kind}: {bad[0]} is below {minimum}")
    return values


def parse_overrides(pairs) -> dict:
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def check_possible(models, backends, quiet_unavailable=()):
    """A sweep may hold combinations this machine cannot run (they are stored as
    unavailable, with the reason); a request of nothing but those is an error."""
    from .backends import get_backend
    impossible = []
    for b in backends:
        backend = get_backend(b)
        ok, why = backend.available()
        for m in models:
            if ok:
                fine, reason = backend.supports(m)
                if not fine:
                    impossible.append((b, f"{b} cannot train {m} ({reason})"))
            else:
                impossible.append((b, f"{b} is unavailable ({why})"))
    if len(impossible) == len(models) * len(backends):
        raise ValueError(f"nothing to run: {impossible[0][1]}"
                         + (f"; and {len(impossible) - 1} more" if len(impossible) > 1 else ""))
    for b, line in dict.fromkeys(impossible):
        print(f"note: {line}: {'left out' if b in quiet_unavailable else 'stored as unavailable'}",
              file=sys.stderr)
    return {b for b, _ in impossible if not get_backend(b).available()[0]}


def plan(options) -> dict:
    """Check every option and name, and load the datasets, before any work starts.
    ``options``: the run's options by name (the CLI's namespace as a dict, or a
    caller's own, e.g. `mnist-bench gpu`), never changed. Returns the sweep;
    raises ValueError/DataError with one clear line."""
    from types import SimpleNamespace

    from .backends import backend_names
    from .data import load
    given = dict(DEFAULTS, **{k: v for k, v in dict(options).items() if v is not None or k in DEFAULTS})
    quick_backends = ()
    if given.get("quick"):
        clash = [k for k in QUICK if given.get(k) != DEFAULTS.get(k)]
        if clash:
            raise ValueError(f"--quick sets --{clash[0].replace('_', '-')} itself; drop one of them "
                             f"(the main job is {QUICK['models']} at {QUICK['batch_sizes']})")
        given.update(QUICK, report=given.get("report") or os.path.join(given["results_dir"], "report"))
        quick_backends = csv(QUICK["backends"], "backends")
    args = SimpleNamespace(**given)
    from .backends import plugin_modules
    plugin_modules()  # a plugin may add networks as well as backends
    models = csv(args.models, "models")
    for name in models:
        get_network(name)  # unknown name -> ValueError naming the known ones
    backends = csv(args.backends, "backends")
    from .backends import get_backend, parse_name
    known = backend_names()  # with the plugins' backends
    unknown = [b for b in backends if parse_name(b)[0] not in known]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(known)}")
    for b in backends:
        get_backend(b)  # unknown options -> ValueError
    overrides = parse_overrides(args.set)
    if "batch_size" in overrides:
        raise ValueError(f"--set batch_size={overrides['batch_size']}: the batch size is a sweep "
                         f"axis; use --batch-sizes {overrides['batch_size']}")
    if "epochs" in overrides and args.mode == "throughput":
        raise ValueError(f"--set epochs={overrides['epochs']}: a throughput cell's epochs per "
                         f"sample are calibrated; --epochs sets their minimum")
    for name in models:
        config_for(get_network(name), overrides)  # unknown hyperparameter -> ValueError
    if args.mode == "throughput" and args.seeds and len(csv(args.seeds, "seeds")) > 1:
        raise ValueError("several --seeds are for --mode tta; throughput cells use one seed")
    seeds = ints(args.seeds or ("0,1,2,3,4" if args.mode == "tta" else "0"), "seeds", 0)
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    if args.processes < 1:
        raise ValueError("--processes must be at least 1")
    if args.compile_probes < 1:
        raise ValueError("--compile-probes must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if args.train_limit is not None and args.train_limit < 1:
        raise ValueError("--train-limit must be at least 1")
    if not args.replay_budget >= 0:
        raise ValueError("--replay-budget is a number of seconds, 0 or more")
    if not 0 < args.target_accuracy <= 1:
        raise ValueError("--target-accuracy is a fraction in (0, 1]")
    threads = ints(args.threads, "threads", 1) if args.threads else [os.cpu_count()]
    cores = os.cpu_count() or 1
    if max(threads) > cores and not args.oversubscribe:
        raise ValueError(f"--threads {max(threads)}: this machine has {cores} cores; every pool "
                         f"would compete for them (--oversubscribe to measure that anyway)")
    batch_sizes = ints(args.batch_sizes, "batch-sizes", 0) if args.batch_sizes else None
    unavailable = check_possible(models, backends, quiet_unavailable=quick_backends)
    if quick_backends:  # the main job runs what this machine has
        backends = [b for b in backends if b not in unavailable]
    if args.data_dir and args.dataset not in ("auto", None):
        raise ValueError(f"--data-dir {args.data_dir} names the data itself; drop --dataset "
                         f"{args.dataset} (a directory is stored under its own name)")
    datasets = []
    for name in csv(args.dataset, "dataset") if not args.data_dir else ["auto"]:
        ds = load(name, args.data_dir, allow_download=not args.no_download,
                  log=lambda m: print(m, file=sys.stderr))
        if ds.synthetic:
            print(f"WARNING: dataset {ds.name} is SYNTHETIC: timings are meaningful, "
                  f"accuracies are not", file=sys.stderr)
        datasets.append(ds)
        n = min(args.train_limit or len(ds.train_x), len(ds.train_x))
        too_big = [b for b in batch_sizes or [] if b > n]
        if too_big:
            raise ValueError(f"--batch-sizes {too_big[0]}: larger than the {n:,} training images of "
                             f"{ds.name} (0 trains on the full batch)")
    from .errors import writable_dir  # last: a refused run leaves no directory behind
    writable_dir(os.path.join(args.results_dir, "runs"), "--results-dir")
    if args.report:
        writable_dir(args.report, "--report")
    return {"models": models, "backends": backends,
            "batch_sizes": batch_sizes, "threads": threads,
            "datasets": datasets, "mode": args.mode, "epochs": args.epochs,
            "rounds": args.rounds if args.mode == "throughput" else len(seeds), "seeds": seeds,
            "target_accuracy": args.target_accuracy, "train_limit": args.train_limit,
            "overrides": overrides, "measure_compile": args.measure_compile,
            "compile_probes": args.compile_probes,
            "machine": args.machine, "report": args.report, "results_dir": args.results_dir,
            "replay_budget_s": args.replay_budget, "format": args.format,
            "processes": min(args.processes, args.rounds) if args.mode == "throughput" else 1,
            "model_batch_sizes": {m: NETWORKS[m].defaults["batch_size"] for m in models}}


def batch_sizes_of(sweep, backend, model):
    sizes = sweep["batch_sizes"] or [sweep["model_batch_sizes"][model]]
    if backend in BATCH_INDEPENDENT and sweep["batch_sizes"] and len(sizes) > 1:
        own = sweep["model_batch_sizes"][model]
        return [own] if own in sizes else sizes[:1]
    return sizes


def cells_of(sweep, data_files) -> list:
    """One cell per dataset x backend x thread count x model x batch size."""
    cells = []
    kind = "tta" if sweep["mode"] == "tta" else "epoch"
    for ds in sweep["datasets"]:
        for backend in sweep["backends"]:
            for threads in sweep["threads"]:
                for model in sweep["models"]:
                    for bs in batch_sizes_of(sweep, backend, model):
                        cells.append({
                            # one group: every cell of the sweep is sampled in the same
                            # rounds, so two cells' samples pair up by round
                            "id": len(cells), "group": 0, "kind": kind, "model": model,
                            "backend": backend,
                            "batch_size": bs, "threads": threads, "dataset": ds.name,
                            "synthetic": ds.synthetic, "data_file": data_files[ds.name],
                            "seed": sweep["seeds"][0] if kind == "epoch" else None,
                            "tta_seeds": sweep["seeds"] if kind == "tta" else None,
                            "epochs": sweep["epochs"], "overrides": sweep["overrides"],
                            "replay_budget_s": sweep["replay_budget_s"],
                            "target_accuracy": sweep["target_accuracy"] if kind == "tta" else None})
    return cells


def settings_of(sweep: dict) -> dict:
    """What goes in the run header: every option, datasets by name and size."""
    out = {k: v for k, v in sweep.items() if k != "datasets"}
    out["datasets"] = [{"name": d.name, "source": d.source, "synthetic": d.synthetic,
                        "train": len(d.train_x) if not sweep["train_limit"]
                        else min(sweep["train_limit"], len(d.train_x)),
                        "test": len(d.test_x), "notes": d.notes} for d in sweep["datasets"]]
    return out
