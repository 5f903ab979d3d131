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


def write_atomic(path, text):
    """``text`` into ``path`` through a temporary file in the same directory, fsync
    and rename: a reader sees the old file or the new one, never a part. A failed
    write (a full disk) removes its temporary and raises, the old file intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


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
        from .errors import writable_dir
        writable_dir(self.dir, "--results-dir")
        self.path = os.path.join(self.dir, self.header["run_id"] + ".jsonl")
        if os.path.exists(self.path):
            raise ValueError(f"{self.path} exists already: run ids must be unique")
        self._write()

    @property
    def run_id(self):
        return self.header["run_id"]

    def put(self, cell: dict):
        """Store a cell, replacing the earlier version of the same ``id`` (a cell is
        rewritten after every round), and rewrite the file. Once the run is closed
        (interrupted, say, while setup threads still finish) nothing more is written."""
        if self.header["finished"] is not None:
            return
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
        if self.header["finished"] is not None:
            return
        self.header["status"] = status
        self.header["finished"] = now_iso()
        try:
            self._write()
        except OSError:
            if status == "complete":
                raise
            # marking a failed or interrupted run is best effort: the file as last
            # written stays whole, its header "running"

    def _write(self):
        lines = [json.dumps(json_safe(self.header), allow_nan=False)]
        lines += [json.dumps(c, allow_nan=False) for c in self.cells]
        write_atomic(self.path, "\n".join(lines) + "\n")
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


def header_problem(record) -> str:
    """Why ``record`` is not a run header this code reads ('' when it is)."""
    if not isinstance(record, dict) or record.get("type") != "run":
        return "not a results file: its first line is not a run header ({\"type\": \"run\", ...})"
    version = record.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema version {version!r}; this code reads up to {SCHEMA_VERSION}"
    if not isinstance(record.get("run_id"), str) or not record["run_id"]:
        return "the run header has no run_id"
    return ""


def cell_problem(record) -> str:
    """Why ``record`` is not a cell this code reads ('' when it is): its kind and
    status known, a non-ok cell saying why, samples as numbers, an ok cell
    validated and timed."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not a JSON object"
    if record.get("type") != "cell":
        return f"type {record.get('type')!r}, expected 'cell'"
    if record.get("kind") not in KINDS:
        return f"kind {record.get('kind')!r} is not one of {', '.join(KINDS)}"
    if record.get("status") not in CELL_STATUSES:
        return f"status {record.get('status')!r} is not one of {', '.join(CELL_STATUSES)}"
    samples = record.get("samples_s")
    if samples is not None and (not isinstance(samples, list) or not all(
            s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)) for s in samples)):
        return "samples_s is not a list of numbers"
    for key in ("model", "backend") if record["kind"] != "kernel" else ("family", "version"):
        if key not in record and KERNEL_FIELDS.get(key) not in record:
            return f"no {key}"
    try:
        check_cell(record)
    except ValueError as e:
        return str(e)
    return ""


def read_run(path, skip_bad=False, warn=None) -> tuple:
    """(header, cells) of one run file. A malformed file raises ValueError naming the
    file and line; with ``skip_bad`` its bad cell lines are left out instead, each
    with a warning (``warn``), and counted in ``header["_skipped"]``."""
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f.read().splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty (not a results file)")
    records = []
    for number, line in lines:
        try:
            records.append((number, json.loads(line)))
        except ValueError as e:
            records.append((number, ValueError(f"not valid JSON ({e})")))
    number, header = records[0]
    problem = str(header) if isinstance(header, ValueError) else header_problem(header)
    if problem:
        raise ValueError(f"{path}:{number}: {problem}")
    cells, skipped = [], 0
    for number, record in records[1:]:
        problem = str(record) if isinstance(record, ValueError) else cell_problem(record)
        if problem:
            if not skip_bad:
                raise ValueError(f"{path}:{number}: {problem} (--skip-bad leaves such lines out)")
            skipped += 1
            (warn or (lambda m: print(m, file=sys.stderr)))(f"warning: {path}:{number}: {problem}: left out")
            continue
        cells.append(working_form(record))
    if skipped:
        header = dict(header, _skipped=skipped)
    return header, cells


def read_results(paths, skip_bad=False):
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
        header, cells = read_run(path, skip_bad)
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
        runs = pd.json_normalize([{k: v for k, v in h.items()
                                   if k not in ("type", "_path", "_n_cells", "_skipped")}
                                  for h in headers], max_level=1)
        runs["path"] = [h.pop("_path") for h in headers]
        runs["n_cells"] = [h.pop("_n_cells") for h in headers]
        runs["skipped_lines"] = [h.pop("_skipped", 0) for h in headers]
        runs["header"] = headers
    cells = pd.json_normalize(rows, max_level=1) if rows else pd.DataFrame()
    for column in CELL_COLUMNS:
        if column not in cells:
            cells[column] = None
    return runs, cells
