"""What an epoch worker measures for one cell (bench/worker.py runs it).

``EpochUnit`` (throughput): ``setup`` validates the backend against numpy at the
cell's batch size (a cell that fails is never timed), times the first step (JIT
or cache load) and one warm-up epoch, calibrates -- trains epochs until they add
up to EPOCH_SAMPLE_MIN_S and sets the epochs per sample that last
CALIBRATION_MARGIN times that at their mean, as pyperf calibrates its loops (a
sample of a few milliseconds is scheduler noise, not signal) -- and checks the
process's thread pools. ``sample(i)`` is one timed sample: the trainer's next
``epochs_per_sample`` epochs (a trainer trains epochs 0, 1, 2, ... in order,
each in the batch order every backend shares, drawn before the clock starts).
``finish`` scores the test set, then checks the timed trainer itself against the
reference over every epoch it trained (bench/verify.py): a cell whose timed work
differs from the checked work is stored invalid, its samples kept and never
reported. ``TtaUnit`` (time to accuracy): sample i
trains seed i from its init until the test accuracy reaches the target,
evaluation on the clock.

Only the epoch loop and a final synchronisation are inside the timer.
"""
import hashlib
import json
import math
import time

import numpy as np

from ..models import config_for, get_network
from ..models.train import accuracy, epoch_batches, prepare_inputs, prepare_targets
from .measure import CpuTimer, freeze_heap, thread_mismatches, thread_pools
from .stats import NOISY_STEAL, mlperf_score

VALIDATION_STEPS = 3
EPOCH_SAMPLE_MIN_S = 0.1
CALIBRATION_MARGIN = 1.5
MAX_EPOCHS_PER_SAMPLE = 1000
_data = {}


def load_data(path):
    """The worker's training and test arrays, read once per file."""
    if path not in _data:
        with np.load(path) as z:
            _data[path] = {k: z[k] for k in z.files}
    return _data[path]


def timed_epochs(trainer, batch_lists) -> tuple:
    """Seconds per epoch of the epochs in ``batch_lists`` and the last epoch's loss:
    nothing inside the timer but the training loop and the final synchronisation."""
    result = {}

    def run():
        for batches in batch_lists:
            result["loss"] = trainer.train_epoch(batches)
        trainer.synchronize()

    return CpuTimer()(run) / len(batch_lists), result["loss"]


class EpochUnit:
    def __init__(self, cell):
        from .backends import get_backend
        self.cell = cell
        self.backend = get_backend(cell["backend"])
        self.network = get_network(cell["model"])
        self.config = config_for(self.network, cell.get("overrides"))
        self.config["batch_size"] = cell["batch_size"]
        self.seed = cell.get("seed") or 0
        self.epochs = cell.get("epochs") or 1
        self.trained = 0  # epochs the timed trainer has trained (indices 0 .. trained - 1)

    def refuse(self):
        """(status, why) when the cell cannot run here, else None."""
        ok, why = self.backend.available()
        if ok:
            ok, why = self.backend.supports(self.cell["model"])
        return None if ok else ("unavailable", why)

    def setup(self) -> dict:
        from .validate import run_steps, validate, validation_data
        refused = self.refuse()
        if refused:
            return {"status": refused[0], "error": refused[1]}
        threads = self.cell["threads"]
        self.backend.configure_threads(threads)
        out = {"config": self.config, "flops_per_sample": self.network.flops_per_sample()}
        # The first step of a new trainer in this process carries the JIT compilation
        # (or its on-disk cache load): timed apart, before validation runs it hot.
        x, y, _ = validation_data(self.network, max(self.cell["batch_size"], 1), self.seed)
        freeze_heap()
        t0 = time.perf_counter()
        try:
            run_steps(self.backend, self.network, self.config, x, y, 1, self.seed)
            first_step = time.perf_counter() - t0
        except Exception:  # left for validation to record
            first_step = None
        check = validate(self.backend, self.network, steps=VALIDATION_STEPS,
                         batch_size=self.cell["batch_size"] or None, seed=self.seed,
                         overrides=self.cell.get("overrides"), config=self.config)
        out["validation"] = {"ok": check.ok, "max_error": check.max_error, "steps": check.steps,
                             "tolerance": check.tolerance}
        if not check.ok:
            return out | {"status": "invalid", "error": check.error}
        data = load_data(self.cell["data_file"])
        self.x = prepare_inputs(self.network, data["train_x"])
        self.y = prepare_targets(self.network, data["train_y"])
        self.test_x = data["test_x"].reshape((-1,) + tuple(self.network.input_shape))
        self.test_y = data["test_y"]
        self.trainer = self.backend.make_trainer(self.network, self.network.init_params(self.seed),
                                                 self.config, self.seed)
        self.trainer.set_data(self.x, self.y)
        warm_s = self.train(1)
        out["compile"] = {"first_step_s": first_step, "warmup_epoch_s": warm_s,
                          "backend": self.backend.compile_info()}
        if self.cell.get("epochs_per_sample"):  # set up again in a fresh worker: keep the count
            self.per_sample = int(self.cell["epochs_per_sample"])
        else:
            out.update(self.calibrate())
        out["epochs_per_sample"] = self.per_sample
        pools = thread_pools()
        out["env"] = pools
        wrong = thread_mismatches(pools, threads)
        if wrong:
            return out | {"status": "error", "error": f"thread pools differ from the cell's "
                                                      f"{threads} threads: {'; '.join(wrong)}"}
        out["train_samples"] = len(self.x)
        out["epochs"] = self.epochs
        return out | {"status": "ready"}

    def calibrate(self) -> dict:
        """Epochs until EPOCH_SAMPLE_MIN_S of them, then the count that lasts
        CALIBRATION_MARGIN times that at their mean (one slow epoch would otherwise
        set a count whose samples fall short of the minimum)."""
        count, spent = 0, 0.0
        while spent < EPOCH_SAMPLE_MIN_S and count < MAX_EPOCHS_PER_SAMPLE:
            n = 1 if not count else max(1, min(count, MAX_EPOCHS_PER_SAMPLE - count))
            spent += self.train(n) * n
            count += n
        epoch_s = max(spent / count, 1e-9)
        self.per_sample = max(self.epochs, min(MAX_EPOCHS_PER_SAMPLE, math.ceil(
            CALIBRATION_MARGIN * EPOCH_SAMPLE_MIN_S / epoch_s)))
        return {"calibration_epoch_s": epoch_s, "calibration_epochs": count}

    def train(self, count) -> float:
        """Seconds per epoch of the timed trainer's next ``count`` epochs."""
        n, bs = len(self.x), self.cell["batch_size"]
        epochs = range(self.trained, self.trained + count)
        seconds, self.loss = timed_epochs(self.trainer, [epoch_batches(n, bs, self.seed, e)
                                                         for e in epochs])
        self.trained += count
        return seconds

    def sample(self, index) -> dict:
        seconds = self.train(self.per_sample)
        return {"seconds": seconds, "loss": self.loss}

    def finish(self) -> dict:
        from .verify import REPLAY_BUDGET_S, verify
        out = {"accuracy": accuracy(self.trainer, self.test_x, self.test_y)}
        setting = json.dumps([self.cell["model"], self.cell["batch_size"], self.seed,
                              self.cell.get("overrides"), self.cell["data_file"]], sort_keys=True)
        check = verify(self.trainer, self.backend, self.network, self.config, self.seed,
                       (self.x, self.y), self.trained, (self.test_x, self.test_y),
                       budget_s=self.cell.get("replay_budget_s", REPLAY_BUDGET_S),
                       cache_dir=self.cell.get("reference_dir"),
                       cache_key=hashlib.sha1(setting.encode()).hexdigest()[:16])
        out["verification"] = check
        if check["status"] != "ok":
            out.update(status=check["status"], error=check["error"])
        return out


class TtaUnit(EpochUnit):
    """Sample i: seed seeds[i] trained from its own init until the test accuracy
    reaches the target (or the epoch limit), training and evaluation timed."""

    def setup(self) -> dict:
        out = super().setup()
        self.trainer = None
        return out

    def sample(self, index) -> dict:
        seed = self.cell["tta_seeds"][index % len(self.cell["tta_seeds"])]
        trainer = self.backend.make_trainer(self.network, self.network.init_params(seed),
                                            self.config, seed)
        trainer.set_data(self.x, self.y)
        max_epochs = self.cell.get("epochs") or self.config["epochs"]
        elapsed, log, reached = 0.0, [], None
        for epoch in range(max_epochs):
            batches = epoch_batches(len(self.x), self.cell["batch_size"], seed, epoch)
            train_s, loss = timed_epochs(trainer, [batches])
            t0 = time.perf_counter()
            acc = accuracy(trainer, self.test_x, self.test_y)
            eval_s = time.perf_counter() - t0
            elapsed += train_s + eval_s
            log.append({"epoch": epoch + 1, "loss": loss, "accuracy": acc, "train_s": train_s,
                        "eval_s": eval_s, "elapsed_s": elapsed})
            if acc >= self.cell["target_accuracy"]:
                reached = elapsed
                break
        return {"seconds": reached, "seed": {"seed": seed, "time_to_accuracy_s": reached,
                                             "epochs": len(log), "final_accuracy": log[-1]["accuracy"],
                                             "epoch_log": log}}

    def finish(self) -> dict:
        return {}


UNITS = {"epoch": EpochUnit, "tta": TtaUnit}


def finalize(cell, figures=None):
    """A cell's figures derived from its samples: images per second, GFLOP/s, the
    compile figures (``figures``: the parent's record for the cell's backend and
    model) with where they came from, the MLPerf score of a tta cell."""
    comp = cell.setdefault("compile", {})
    if figures and "cold_s" in figures:
        comp.update(cold_s=figures["cold_s"], cache_hit_s=figures["cache_hit_s"],
                    cold_source="probe: fresh process, empty compile caches",
                    figures_from=("measured in this run" if figures["source"] == "measured" else
                                  f"stored: measured {figures.get('measured')} "
                                  f"in run {figures.get('run_id')}"),
                    code_version=figures.get("code_version"),
                    probes_at_once=figures.get("probes_at_once", 1))
    elif comp.get("first_step_s") is not None:
        comp.update(cold_s=comp["first_step_s"], cache_hit_s=None,
                    cold_source="first step (the backend caches no compiled code)"
                    if not figures else f"first step (probe failed: {figures.get('error')})")
    if cell.get("median_s"):
        n = cell.get("train_samples")
        if n:
            cell["samples_per_s"] = n / cell["median_s"]
            cell["gflops"] = cell["flops_per_sample"] * n / cell["median_s"] / 1e9
    if cell["kind"] == "tta" and cell.get("seeds"):
        cell["score_s"] = mlperf_score([s["time_to_accuracy_s"] for s in cell["seeds"]])
        cell["accuracy"] = cell["seeds"][-1]["final_accuracy"]
        cell["epoch_samples_s"] = [e["train_s"] for s in cell["seeds"] for e in s["epoch_log"]]
    steal = (cell.get("noise") or {}).get("steal_max")
    if steal is not None and steal > NOISY_STEAL:
        cell["noisy"] = True
        cell["noisy_reason"] = f"up to {steal:.0%} of the CPU stolen by the hypervisor in a sample"
