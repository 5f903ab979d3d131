"""The results store: one JSON Lines file per run under ``results/runs/``, schema in
results/SCHEMA.md. ``RunWriter`` writes a run cell by cell, atomically;
``read_results`` merges any number of run files into two DataFrames
(bench/importers.py brings other tools' files in).
"""
import datetime
import glob
import json
import math
import os
import re
import secrets
import socket
import sys

SCHEMA_VERSION = 3  # 2: rounds, intervals, noise, thread pools; 3: kernel cells name family and version
KINDS = ("epoch", "tta", "kernel")
CELL_STATUSES = ("ok", "invalid", "unverified", "unavailable", "error")
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
# Columns every cells frame has, even when no file sets them (see SCHEMA.md).
CELL_COLUMNS = ("run_id", "machine", "git_commit", "git_dirty", "id", "group", "kind", "model",
                "backend", "batch_size", "threads", "dataset", "synthetic", "shape", "dtype",
                "status", "error", "validation.ok", "validation.max_error", "compile.cold_s",
                "compile.cache_hit_s", "samples_s", "rounds", "median_s", "iqr_s", "ci_low_s",
                "ci_high_s", "noisy", "samples_per_s", "gflops", "gbytes_per_s", "flops", "bytes",
                "accuracy", "loss", "source", "device", "library", "train_samples")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """YYYYmmdd-HHMMSS-<host>-<6 hex>: sorts by time, unique across machines."""
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname()).strip("-")[:24] or "host"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{host}-{secrets.token_hex(3)}"


def json_safe(value):
    """NaN/inf are not JSON: stored as null. NumPy scalars and tuples become plain JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar or 0-d array
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# A kernel cell's coordinates on disk (schema 3) and in the frames and dicts the code
# passes around, where one pair of columns serves every kind of cell.
KERNEL_FIELDS = {"family": "model", "version": "backend"}


def stored_form(cell: dict) -> dict:
    """A cell as the store writes it: a kernel cell names its ``family`` and
    ``version`` (not the epoch cells' ``model`` and ``backend``)."""
    if cell.get("kind") != "kernel":
        return cell
    out = {k: v for k, v in cell.items() if k not in KERNEL_FIELDS.values()}
    for field, generic in KERNEL_FIELDS.items():
        out[field] = cell.get(field, cell.get(generic))
    return out


def working_form(cell: dict) -> dict:
    """A stored cell as the code uses it: a kernel cell's family and version also
    under ``model`` and ``backend`` (schema 2 files have only those)."""
    if cell.get("kind") != "kernel":
        return cell
    out = dict(cell)
    for field, generic in KERNEL_FIELDS.items():
        out.setdefault(field, cell.get(generic))
        out[generic] = out[field]
    return out


def check_cell(cell: dict):
    """A cell the store accepts; in particular an ``ok`` cell must have passed
    validation and carry its samples, so no unvalidated time is ever stored as valid."""
    if cell.get("kind") not in KINDS:
        raise ValueError(f"cell kind {cell.get('kind')!r} is not one of {', '.join(KINDS)}")
    status = cell.get("status")
    if status not in CELL_STATUSES:
        raise ValueError(f"cell status {status!r} is not one of {', '.join(CELL_STATUSES)}")
    if status == "ok":
        if not (cell.get("validation") or {}).get("ok"):
            raise ValueError(f"cell {cell.get('model')}/{cell.get('backend')} is marked ok "
                             f"without a passed validation")
        if not cell.get("samples_s"):
            raise ValueError(f"cell {cell.get('model')}/{cell.get('backend')} is marked ok "
                             f"without timing samples")
    elif not cell.get("error"):
        raise ValueError(f"a cell with status {status!r} needs an error saying why")


def default_header(settings: dict, command=None) -> dict:
    """The run header for this process: command line, git, machine and versions."""
    from .machine import git_info, machine_info, versions
    machine = machine_info()
    if settings.get("machine"):  # the user's name for it (--machine), as asv's machine.json
        machine["name"] = settings["machine"]
    return {"command": list(sys.argv if command is None else command), "git": git_info(),
            "machine": machine, "versions": versions(), "settings": settings}


class RunWriter:
    """Writes one run file, rewriting it whole after every cell: a temporary file in
    the same directory, fsync, then os.replace. A reader (or a run killed at any
    instant) therefore only ever sees a complete file of finished cells."""

    def __init__(self, results_dir, header: dict):
        missing = {"command", "git", "machine", "versions", "settings"} - set(header)
        if missing:
            raise ValueError(f"run header lacks {', '.join(sorted(missing))} (see default_header)")
        self.header = {"type": "run", "schema_version": SCHEMA_VERSION,
                       "run_id": header.get("run_id") or new_run_id(),
                       "started": header.get("started") or now_iso(), "finished": None,
                       "status": "running"}
        self.header.update({k: v for k, v in header.items() if k not in self.header})
        self.cells = []
        self.dir = os.path.join(results_dir, "runs")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, self.header["run_id"] + ".jsonl")
        if os.path.exists(self.path):
            raise ValueError(f"{self.path} exists already: run ids must be unique")
        self._write()

    @property
    def run_id(self):
        return self.header["run_id"]

    def put(self, cell: dict):
        """Store a cell, replacing the earlier version of the same ``id`` (a cell is
        rewritten after every round), and rewrite the file."""
        cell = json_safe({"type": "cell", **stored_form(cell)})
        check_cell(cell)
        if "id" in cell:
            for i, old in enumerate(self.cells):
                if old.get("id") == cell["id"]:
                    self.cells[i] = cell
                    break
            else:
                self.cells.append(cell)
        else:
            self.cells.append(cell)
        self._write()

    def close(self, status="complete"):
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
        self.header["status"] = status
        self.header["finished"] = now_iso()
        self._write()

    def _write(self):
        lines = [json.dumps(json_safe(self.header), allow_nan=False)]
        lines += [json.dumps(c, allow_nan=False) for c in self.cells]
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename itself is durable only once the directory entry is on disk.
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- reading ------------------------------------------------------------------

def result_files(paths) -> list:
    """Run files named by ``paths``: files as they are, directories searched recursively."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or directory")
    unique = {}
    for f in files:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values())


def read_run(path) -> tuple:
    """(header, cells) of one run file; a malformed file raises ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not valid JSON ({e})") from None
    if not records or records[0].get("type") != "run":
        raise ValueError(f"{path}: not a results file (its first line is not a run header)")
    header = records[0]
    version = header.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"{path}: schema version {version!r}; this code reads up to "
                         f"{SCHEMA_VERSION}")
    cells = [working_form(r) for r in records[1:] if r.get("type") == "cell"]
    return header, cells


def read_results(paths):
    """Merge run files (or directories of them) -> (runs, cells) DataFrames.

    ``runs``: one row per run with its id, times, status, git and machine fields
    flattened (``git.commit``, ``machine.hostname``, ...), and the full header in
    ``header``. ``cells``: one row per cell, nested objects flattened with dots
    (``validation.ok``, ``compile.cold_s``), lists (``samples_s``, ``shape``) kept as
    lists, plus the run's ``run_id``, ``machine`` (hostname), ``git_commit`` and
    ``git_dirty`` so that cells from many runs can be grouped directly.
    """
    import pandas as pd
    headers, rows = [], []
    for path in result_files(paths):
        header, cells = read_run(path)
        git = header.get("git") or {}
        machine = (header.get("machine") or {}).get("hostname")
        headers.append(header)
        for cell in cells:
            rows.append({**{k: v for k, v in cell.items() if k != "type"},
                         "run_id": header["run_id"], "machine": machine,
                         "git_commit": git.get("commit"), "git_dirty": git.get("dirty")})
        header["_path"], header["_n_cells"] = path, len(cells)
    runs = pd.DataFrame()
    if headers:
        runs = pd.json_normalize([{k: v for k, v in h.items() if k not in ("type", "_path", "_n_cells")}
                                  for h in headers], max_level=1)
        runs["path"] = [h.pop("_path") for h in headers]
        runs["n_cells"] = [h.pop("_n_cells") for h in headers]
        runs["header"] = headers
    cells = pd.json_normalize(rows, max_level=1) if rows else pd.DataFrame()
    for column in CELL_COLUMNS:
        if column not in cells:
            cells[column] = None
    return runs, cells
