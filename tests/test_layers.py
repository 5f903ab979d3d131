"""The package's layers import one way only, and the install shadows nothing.

    models (the contract) <- kernels <- bench.backends <- bench (harness, store, report, CLI)

Every module under models/, kernels/ and bench/ is parsed (imports inside
functions included) and each import of the suite's own code is resolved to its
layer; an import of a higher layer from a lower one fails the test. The
distribution installs one import package, ``mnist_numba_bench``: a module that
imports a bare ``bench``, ``kernels`` or ``models`` would pick up whatever other
distribution owns that name.
"""
import ast
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mnist_numba_bench"
FOLDERS = ("models", "kernels", "bench")
# Third-party libraries kernels/ may import at module level; torch only inside a
# function (the baseline versions of a kernel family, where torch is installed).
KERNEL_LIBRARIES = {"numpy", "numba", "llvmlite"}
KERNEL_LAZY_LIBRARIES = {"torch"}


def layer(module: str):
    """0 models, 1 kernels, 2 bench.backends, 3 the rest of bench; None: not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    if parts[1] == "bench" and len(parts) > 2 and parts[2] == "backends":
        return 2
    return {"models": 0, "kernels": 1, "bench": 3}.get(parts[1])


def modules():
    for folder in FOLDERS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    yield path, ".".join([PACKAGE] + rel), f == "__init__.py"


def imports(path, module, is_package):
    """(absolute target, line, inside a function) of every import in the file."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if is_package else module.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                found.append((target, child.lineno, in_function))
                if not child.module:  # from . import x: x may be a module of that package
                    found.extend((f"{target}.{a.name}", child.lineno, in_function) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def test_every_import_runs_down_the_layers():
    wrong = []
    for path, module, is_package in modules():
        own = layer(module)
        for target, line, lazy in imports(path, module, is_package):
            top = target.split(".")[0]
            where = f"{os.path.relpath(path, ROOT)}:{line} imports {target}"
            if top in FOLDERS:
                wrong.append(f"{where}: a bare top-level name (use the {PACKAGE} package)")
                continue
            theirs = layer(target)
            if theirs is not None and theirs > own:
                wrong.append(f"{where}: layer {theirs} from layer {own}")
            if own == 1 and theirs is None and top not in sys.stdlib_module_names:
                if top not in KERNEL_LIBRARIES and not (lazy and top in KERNEL_LAZY_LIBRARIES):
                    wrong.append(f"{where}: kernels/ may import only numpy, numba and llvmlite "
                                 f"(torch inside a baseline version)")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The resolver above must see relative, absolute and function-level imports."""
    f = tmp_path / "x.py"
    f.write_text("from ...bench.store import read\ndef g():\n    from ..models import ops\n")
    found = imports(str(f), f"{PACKAGE}.kernels.sub.x", False)
    assert (f"{PACKAGE}.bench.store", 1, False) in found
    assert (f"{PACKAGE}.kernels.models", 3, True) in found
    assert layer(f"{PACKAGE}.bench.store") == 3 and layer(f"{PACKAGE}.bench.backends.x") == 2


def test_pyproject_lists_every_package():
    """A folder with an __init__.py that pyproject.toml does not list would be missing
    from a (non-editable) install."""
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    present = {module for _, module, is_package in modules() if is_package}
    assert present == listed


STAND_IN = {
    # Hugging Face's `kernels` is a real top-level package; these stand-ins make any
    # import of a bare name fail loudly, and give kernel discovery a decoy module.
    "kernels/__init__.py": "STAND_IN = True\n",
    "kernels/matmul.py": "raise ImportError('stand-in kernels.matmul was imported')\n",
    "models/__init__.py": "raise ImportError('stand-in models was imported')\n",
    "bench/__init__.py": "raise ImportError('stand-in bench was imported')\n",
}


@pytest.fixture
def shadowed(tmp_path):
    """A directory outside the checkout with stand-in top-level packages first on
    sys.path (PYTHONPATH), as a virtualenv with another distribution's `kernels` has."""
    shadow = tmp_path / "site"
    for name, text in STAND_IN.items():
        (shadow / name).parent.mkdir(parents=True, exist_ok=True)
        (shadow / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(shadow)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    work = tmp_path / "work"
    work.mkdir()

    def run(*args, timeout=600):
        proc = subprocess.run([sys.executable, "-m", f"{PACKAGE}.bench.cli", *args], cwd=work,
                              env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"mnist-bench {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr
    return run, work


def test_commands_work_beside_other_top_level_packages(shadowed):
    run, work = shadowed
    assert "numba-fused" in run("list")
    assert "synthetic" in run("data", "info", "--dataset", "synthetic")
    out = run("kernels", "--families", "matmul_nn", "--versions", "numpy_blas,v3_packed",
              "--sizes", "64", "--rounds", "2", "--results-dir", "res")
    assert "matmul_nn" in out
    out = run("run", "--models", "linear", "--backends", "numpy,numba", "--dataset", "synthetic",
              "--train-limit", "64", "--rounds", "2", "--results-dir", "res")
    runs = sorted(os.listdir(work / "res" / "runs"))
    assert len(runs) == 2
    run("report", "--results-dir", "res", "--out", "rep")
    assert (work / "rep" / "report.html").exists()
    run("compare", *[str(work / "res" / "runs" / r) for r in runs[1:] * 2], "--results-dir", "res")


def test_stand_ins_really_shadow(shadowed):
    """The fixture is honest: a bare import there does pick up the stand-in."""
    run, work = shadowed
    env = dict(os.environ, PYTHONPATH=str(work.parent / "site"))
    proc = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.STAND_IN)"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "True", textwrap.shorten(proc.stderr, 300)
