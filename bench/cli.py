"""`mnist-bench`: the command line. Each subcommand lives in its own module with
``add_arguments(parser)`` and ``main(args) -> exit code``; this file only wires
them up and turns user errors into one line and a non-zero exit."""
import argparse
import importlib
import sys

from .errors import UserError

# subcommand -> (module, one-line help)
COMMANDS = {
    "list": (".cli", "models and backends, and whether each is available here"),
    "data": (".cli", "inspect, verify or download a dataset"),
    "run": (".harness", "sweep models x backends x batch sizes x threads; validated timings"),
    "kernels": (".kernel_sweep", "kernel-level sweep: matmul, update, conv across backends"),
    "tune": (".tune", "measure the matmul register tile and cache blocks on this machine, keep the best"),
    "gpu": (".gpu", "the GPU measurements (CUDA kernels vs cuBLAS, GPU epochs) as store cells"),
    "import": (".importers", "bring a pytest-benchmark or GPU-script JSON file into the results store"),
    "report": (".report", "aggregate results into HTML/Markdown tables and plots"),
    "compare": (".compare", "two runs side by side with a regression verdict"),
    "profile": (".profile", "one training epoch under py-spy: flamegraph and time breakdown"),
}


DESCRIPTION = """\
How fast do hand-written Numba kernels train an MNIST network, next to NumPy/BLAS,
PyTorch and JAX? Identical networks, the same weights and batch order, every
backend validated against the NumPy reference before it is timed and checked
again after; timings in interleaved rounds, stored, reported and compared."""
EPILOG = """\
the usual path:
  mnist-bench list                    what this machine can run
  mnist-bench run --quick             the main job: a table on the console, a report
  mnist-bench report                  results/report/report.html (and CSV tables)
  mnist-bench compare RUN_A RUN_B     a regression verdict between two runs
  mnist-bench COMMAND --help          every option of a command"""


def version_text() -> str:
    """The suite's version and the commit of the code that runs."""
    import importlib.metadata
    from .machine import git_info
    try:
        version = importlib.metadata.version("mnist-numba-bench")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    git = git_info()
    commit = (git.get("commit") or "unknown")[:12] + (" with uncommitted changes" if git.get("dirty") else "")
    return f"mnist-bench {version} (commit {commit})"


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (the option and what is wrong with it, then where
    --help is), exit status 2, as every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_arguments(parser):  # list and data share this module
    if parser.prog.endswith(" data"):
        parser.add_argument("action", choices=["info", "verify", "download"],
                            help="info: splits and sizes; verify: parse and check every file; "
                                 "download: fetch into the cache")
        from .data import add_arguments as add_data_arguments
        add_data_arguments(parser)
    else:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.add_argument("--refresh", action="store_true",
                            help="probe every backend again instead of reading the answer kept "
                                 "for this environment (kept until the code, a compiler, this "
                                 "interpreter or a device variable changes)")


def main(args=None):
    """Entry point of both `mnist-bench` and subcommands list/data."""
    if isinstance(args, argparse.Namespace):
        return cmd_list(args) if args.command == "list" else cmd_data(args)
    parser = OneLineParser(prog="mnist-bench", description=DESCRIPTION, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            modules[name] = importlib.import_module(module_name, __package__)
        except ImportError as e:
            modules[name] = None
            p.set_defaults(_missing=f"'{name}' cannot load ({e})")
            continue
        modules[name].add_arguments(p)
    try:
        args = parser.parse_args(args)
    except SystemExit as e:  # --help, or a usage error already said in one line
        return e.code if isinstance(e.code, int) else 2
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"mnist-bench: error: {args._missing}", file=sys.stderr)
        return 2
    return run_command(args.command, lambda: modules[args.command].main(args))


def run_command(command, body) -> int:
    """The one error boundary: a user's mistake or an unusable input or
    environment is one line and exit 2; anything unexpected is one line too,
    naming the log file that holds its traceback, and exit 1. SIGTERM is taken
    as Ctrl-C: the run is closed as interrupted, its workers stopped and its
    temporary files removed."""
    import signal

    from .data import DataError
    from .errors import describe_os_error, log_traceback

    def terminated(signum, frame):
        raise KeyboardInterrupt
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, terminated)
    try:
        return body() or 0
    except (UserError, DataError, ValueError) as e:
        print(f"mnist-bench {command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing, unreadable or unwritable path, a full disk
        print(f"mnist-bench {command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mnist-bench {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line here, the traceback in the log
        log = log_traceback(command)
        print(f"mnist-bench {command}: internal error: {type(e).__name__}: {e} "
              f"(traceback in {log})", file=sys.stderr)
        return 1


def probe_backends(refresh=False):
    """Every registered backend: available here or why not, its description and
    the networks it trains. Probing imports torch and JAX and tries a compile, so
    the answer is kept per environment (the suite's code and compilers, this
    interpreter, the variables and devices that decide availability) in the
    cache, and probed again when any of them changes, on ``refresh``, or when
    the cached file is unreadable. Returns (rows, when probed)."""
    import glob
    import hashlib
    import json
    import os
    import time

    from ..models import NETWORKS
    from ..models.cache import cache_root
    from .backends import backend_names, get_backend
    from .compile_times import code_version
    from .store import write_atomic
    key = json.dumps([code_version(), sys.executable, sorted(NETWORKS), backend_names(),
                      sorted(glob.glob("/dev/nvidia[0-9]*"))] +
                     [os.environ.get(v) for v in ("MNIST_BENCH_PLUGINS", "NUMBA_ENABLE_CUDASIM",
                                                  "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")])
    path = os.path.join(cache_root(), "backends-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
    if not refresh:
        try:
            with open(path) as f:
                cached = json.load(f)
            if cached["key"] == key:
                return cached["rows"], cached["probed"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or broken: probed again and rewritten below
    rows = []
    for bname in backend_names():
        backend = get_backend(bname)
        ok, why = backend.available()
        support = {}
        for mname in NETWORKS:
            s_ok, s_why = backend.supports(mname) if ok else (False, why)
            support[mname] = {"supported": s_ok, "reason": s_why}
        rows.append({"backend": bname, "available": ok, "reason": why,
                     "description": backend.description, "models": support})
    probed = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, json.dumps({"key": key, "probed": probed, "rows": rows}))
    except OSError:
        pass  # an unwritable cache only costs the next `list` a new probe
    return rows, probed


def cmd_list(args):
    import json

    from ..models import NETWORKS
    rows, probed = probe_backends(args.refresh)
    models = [{"model": n, "defaults": cls.defaults, "doc": cls.__doc__.split("\n")[0]}
              for n, cls in NETWORKS.items()]
    if args.json:
        print(json.dumps({"models": models, "backends": rows, "probed": probed}, indent=2))
        return 0
    print("Models (hyperparameters of the write-ups; override with --set key=value):")
    for m in models:
        print(f"  {m['model']:<9} {m['doc']}")
        print(f"            {', '.join(f'{k}={v}' for k, v in m['defaults'].items())}")
    print(f"\nBackends (availability probed {probed}; --refresh probes again):")
    for r in rows:
        state = "available" if r["available"] else f"UNAVAILABLE: {r['reason']}"
        print(f"  {r['backend']:<16} {state}")
        print(f"  {'':<16} {r['description']}")
        if r["available"]:
            no = {m: s["reason"] for m, s in r["models"].items() if not s["supported"]}
            models_ok = [m for m in NETWORKS if m not in no]
            print(f"  {'':<16} trains: {', '.join(models_ok) or 'none'}")
            for m, why in no.items():
                print(f"  {'':<16} not {m}: {why}")
    return 0


def cmd_data(args):
    from . import data
    if args.action == "download":
        if args.dataset not in ("auto", "mnist", "fashion-mnist"):
            raise UserError(f"data download --dataset {args.dataset}: only mnist and fashion-mnist "
                            f"are downloaded")
        name = "mnist" if args.dataset == "auto" else args.dataset
        data.download(name, f"{data.cache_dir()}/{name}")
        print(f"{name}: downloaded and verified into {data.cache_dir()}/{name}")
        return 0
    ds = data.load(args.dataset, args.data_dir, allow_download=not args.no_download)
    print(ds.describe())
    for note in ds.notes:
        print(f"  note: {note}")
    if args.action == "verify":
        for split in ("train", "val", "test"):
            x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
            counts = np.bincount(y, minlength=10) if len(y) else []
            print(f"  {split:<5} {x.shape} float32 in [{x.min() if x.size else 0:.2f}, "
                  f"{x.max() if x.size else 0:.2f}], mean {x.mean() if x.size else 0:.4f}, "
                  f"labels per class {list(map(int, counts))}")
    return 0


import numpy as np  # noqa: E402  (used by cmd_data; kept out of the import-time path above)

if __name__ == "__main__":
    sys.exit(main())
