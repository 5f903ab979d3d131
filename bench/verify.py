"""The check of the timed trainer after its timed rounds: the object that was
timed, in the worker that timed it, must have done the work the reference does.

Validation (bench/validate.py) checks a fresh trainer for a few steps before any
timing; a trainer that then does less work on long epochs, after step 50, or
from its second epoch on would pass it. So after the rounds, the timed trainer
itself is checked twice:

1. **Replay.** The float64 NumPy reference trains the very epochs the trainer
   trained (a trainer trains epochs 0, 1, 2, ... in order: the warm-up, the
   calibration epoch, then every sample's epochs, each with its own epoch
   index's batch order), on the same data from the same init, and the
   trainer's final parameters must lie within the replay's tolerance of it
   (per tensor, the L2 distance relative to how far the tensor moved). The
   tolerance comes from measurement: the float32 reference replays the same
   epochs beside it, and how far honest float32 arithmetic drifts from float64
   on *this* trajectory (``drift``) sets it -- ``max(REPLAY_FLOOR,
   REPLAY_FACTOR * drift)``. The factor is wide because rounding does not drift
   smoothly: a ReLU whose input sits at zero flips in one backend's rounding
   and not in another's, and from then on their weights differ by far more than
   the float32 reference's own drift (torch's mlp at batch 512 after 56 epochs:
   0.0048 against the float32 reference's 0.000055). Small batches at a high
   learning rate make some trajectories chaotic (nielsen at batch 2, lr 3.0:
   float32 rounding alone moves the weights by their whole size within one
   epoch); where the tolerance exceeds REPLAY_DECISIVE the replay cannot tell a
   fault from rounding and says so, and check 2 decides alone. Every backend of
   one setting shares the reference's trajectory (``cache_dir``): each replays
   only the epochs no earlier one did; a replay whose estimated cost still
   exceeds REPLAY_BUDGET_S is skipped and says so.
2. **Held-out slice.** From its state after the rounds (parameters and
   optimizer buffers, ``Trainer.optimizer_state``), the timed trainer trains one
   more epoch -- the next epoch index -- on a slice of held-out images sized to
   give two full batches and a short last one; the float64 reference starts
   from the same state and trains the same epoch, and so does the float32
   reference; the trainer must agree with one of them (float32 and float64 may
   take the two sides of a ReLU whose input sits at zero, and either is honest),
   within validation's tolerance or SLICE_FACTOR times the float32 reference's
   own distance from float64 on that epoch, whichever is larger (at most
   SLICE_CAP). This catches what
   a trainer does differently late in a run: a step counter past 50, optimizer
   state reset per epoch, epoch 0's order reused, a dropped short batch, a
   switch of precision after validation.

A trainer that can report neither (no ``optimizer_state`` for a stateful
optimizer, and a replay that cannot decide) is ``unverified``, never ``ok``.
"""
import time

import numpy as np

from ..models.reference import Float64Ops, NumpyOps
from ..models.train import OpsTrainer, epoch_batches, prepare_targets
from .validate import TOLERANCE, agreement

REPLAY_FLOOR = 0.02
REPLAY_FACTOR = 100.0
REPLAY_DECISIVE = 0.1
REPLAY_BUDGET_S = 5.0
SLICE_FACTOR = 10.0
# ... but never above this: a switch to float16 after validation moves the slice
# epoch 0.009-0.03 from the reference (tests/test_verify.py)
SLICE_CAP = 0.01


def _wide(params):
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def _narrow(params):
    return {k: np.asarray(v, np.float32) for k, v in params.items()}


def reference(network, config, seed, ops=None, params=None):
    """The reference trainer (float64 unless ``ops`` says otherwise) from
    ``params`` (default: the network's canonical init)."""
    ops = ops or Float64Ops()
    init = params if params is not None else network.init_params(seed)
    return OpsTrainer(ops, network, init, config, seed)


def _snapshot(trainer) -> dict:
    return {"flat": trainer.flat.copy(), "step": trainer.step,
            **{f"state{i}": buf.copy() for i, buf in enumerate(trainer.state)}}


def _restore(trainer, snap):
    trainer.flat[:] = snap["flat"]
    trainer.step = int(snap["step"])
    for i, buf in enumerate(trainer.state):
        buf[:] = snap[f"state{i}"]


def _cached(cache_dir, key, epochs):
    """The largest stored reference snapshot at or below ``epochs``: (count, file) or
    (0, None)."""
    import os
    if not cache_dir or not os.path.isdir(cache_dir):
        return 0, None
    best = (0, None)
    for name in os.listdir(cache_dir):
        stem, _, count = name[:-len(".npz")].rpartition("-") if name.endswith(".npz") else ("", "", "")
        if stem == key and count.isdigit() and best[0] < int(count) <= epochs:
            best = (int(count), os.path.join(cache_dir, name))
    return best


def replay(network, config, seed, x, y, epochs, budget_s=REPLAY_BUDGET_S, cache_dir=None,
           cache_key=None) -> dict:
    """The float64 and float32 references trained over epochs 0 .. ``epochs`` - 1
    (each with its own epoch index's order), from the largest snapshot of the same
    trajectory in ``cache_dir`` (every backend of one setting shares it: each
    replays only the epochs the previous ones did not). {"params64", "params32",
    "seconds"}, or {"skipped": why} when the epochs still to replay would take
    longer than ``budget_s`` (estimated after the first)."""
    import os
    t0 = time.perf_counter()
    wide, narrow = reference(network, config, seed), reference(network, config, seed, NumpyOps())
    wide.set_data(x, y)
    narrow.set_data(x, y)
    done, path = _cached(cache_dir, cache_key, epochs) if cache_key else (0, None)
    if path:
        with np.load(path) as z:
            _restore(wide, {k[4:]: z[k] for k in z.files if k.startswith("f64_")})
            _restore(narrow, {k[4:]: z[k] for k in z.files if k.startswith("f32_")})
    todo = range(done, epochs)
    for i, epoch in enumerate(todo):
        batches = epoch_batches(len(x), config["batch_size"], seed, epoch)
        wide.train_epoch(batches)
        narrow.train_epoch(batches)
        if i == 0 and len(todo) > 1:
            estimate = (time.perf_counter() - t0) * len(todo)
            if estimate > budget_s:
                return {"skipped": f"the replay of {len(todo)} epochs would take ~{estimate:.0f} s "
                                   f"(budget {budget_s:.0f} s)"}
    if cache_key and cache_dir and todo:
        os.makedirs(cache_dir, exist_ok=True)
        target = os.path.join(cache_dir, f"{cache_key}-{epochs}.npz")
        tmp = f"{target}.tmp{os.getpid()}.npz"
        np.savez(tmp, **{f"f64_{k}": v for k, v in _snapshot(wide).items()},
                 **{f"f32_{k}": v for k, v in _snapshot(narrow).items()})
        os.replace(tmp, target)
    return {"params64": wide.params(), "params32": narrow.params(), "replayed_epochs": len(todo),
            "seconds": time.perf_counter() - t0}


def held_out_slice(network, test_x, test_y, batch_size):
    """Images (and prepared targets) for the slice epoch: two full batches and a
    short last one (one full batch for full-batch models)."""
    if batch_size <= 0:
        n = 64
    elif batch_size == 1:
        n = 3
    else:
        n = 2 * batch_size + max(1, batch_size // 2)
    n = min(n, len(test_x))
    return np.ascontiguousarray(test_x[:n]), prepare_targets(network, test_y[:n])


def check_slice(trainer, network, config, seed, xs, ys, epoch, tolerance) -> dict:
    """The timed trainer's next epoch (index ``epoch``) on the held-out slice
    against the references started from the trainer's own state. Both the
    float64 and the float32 reference replay it, and the trainer must agree with
    one of them: from a state where a ReLU's input sits at zero, float32 and
    float64 can take the two sides of it (torch's mlp at batch 2 after 7 epochs:
    0.02 from float64, 7e-8 from float32), and either is an honest result; a
    fault agrees with neither."""
    params = trainer.params()
    try:
        state = trainer.optimizer_state()
    except NotImplementedError:
        if config["optimizer"] != "sgd":
            return {"skipped": "the trainer cannot report its optimizer state"}
        state = {"step": getattr(trainer, "step", 0), "buffers": {}}
    refs = []
    for ops, cast in ((Float64Ops(), _wide), (NumpyOps(), _narrow)):
        ref = reference(network, config, seed, ops, params=cast(params))
        ref.load_state(cast(params), {"step": state["step"],
                                      "buffers": {k: cast(v) for k, v in state["buffers"].items()}})
        refs.append(ref)
    batches = epoch_batches(len(xs), config["batch_size"], seed, epoch)
    try:
        trainer.set_data(xs, ys)
        trainer.train_epoch(batches)
        trainer.synchronize()
    except Exception as e:  # the trainer's own failure on the check is its error
        return {"error": float("nan"), "tolerance": tolerance, "epoch": epoch, "images": len(xs),
                "steps": len(batches), "ok": False, "message": f"it raised {type(e).__name__}: {e}"}
    for ref in refs:
        ref.set_data(xs, ys)
        ref.train_epoch(batches)
    # the references' own difference widens the tolerance: from a saturated sigmoid a
    # few steps move the weights little, and rounding is then a larger share of it
    # (nielsen at batch 2: numba 0.0021 from both references)
    out = agreement(_wide(trainer.params()), _wide(refs[1].params()), _wide(refs[0].params()),
                    _wide(params), tolerance, SLICE_FACTOR, SLICE_CAP)
    return dict(out, epoch=epoch, images=len(xs), steps=len(batches),
                ok=bool(np.isfinite(out["error"]) and out["error"] <= out["tolerance"]))


def verify(trainer, backend, network, config, seed, train, epochs, held_out,
           budget_s=REPLAY_BUDGET_S, cache_dir=None, cache_key=None) -> dict:
    """Both checks of the timed trainer. ``train``: its (x, y); ``epochs``: how many
    it trained (epoch indices 0 .. epochs - 1, in order); ``held_out``: (images,
    labels) it never trained on; ``cache_dir``/``cache_key``: where the reference
    trajectory of this setting is shared. Returns the cell's "verification"
    record with "status" (ok, invalid, unverified) and, unless ok, "error"."""
    final = _wide(trainer.params())
    out = {"epochs": epochs}
    # replay first: the slice epoch moves the trainer on
    rep = replay(network, config, seed, *train, epochs, budget_s, cache_dir, cache_key)
    if "skipped" in rep:
        out["replay"] = {"decisive": False, "why": rep["skipped"]}
    else:
        check = agreement(final, _wide(rep["params32"]), rep["params64"],
                          _wide(network.init_params(seed)), REPLAY_FLOOR, REPLAY_FACTOR)
        drift, decisive = check["drift"], check["tolerance"] <= REPLAY_DECISIVE
        out["replay"] = {k: check[k] for k in ("error", "drift", "tolerance", "message")}
        out["replay"].update(decisive=decisive, seconds=round(rep["seconds"], 3),
                             replayed_epochs=rep["replayed_epochs"])
        if not decisive:
            out["replay"]["why"] = (f"float32 rounding alone drifts {drift:.2g} from float64 on this "
                                    f"trajectory: the replay cannot tell a fault from rounding")
    tolerance = backend.validation_tolerance or TOLERANCE
    xs, ys = held_out_slice(network, *held_out, config["batch_size"])
    out["slice"] = check_slice(trainer, network, config, seed, xs, ys, epochs, tolerance)
    rep, sl = out["replay"], out["slice"]
    if rep["decisive"] and not (np.isfinite(rep["error"]) and rep["error"] <= rep["tolerance"]):
        out.update(status="invalid", error=(
            f"the timed trainer's parameters after its {epochs} epochs differ from the "
            f"float64 replay by {rep['error']:.3g} (tolerance {rep['tolerance']:.3g}: {REPLAY_FACTOR:g}x "
            f"the float32 reference's drift {rep['drift']:.2g}){': ' + rep['message'] if rep['message'] else ''}"))
    elif "skipped" not in sl and not sl["ok"]:
        out.update(status="invalid", error=(
            f"the timed trainer's epoch {sl['epoch']} on {sl['images']} held-out images differs from "
            f"the reference started from its own state by {sl['error']:.3g} (tolerance "
            f"{sl['tolerance']:.3g}){': ' + sl['message'] if sl['message'] else ''}"))
    elif "skipped" in sl and not rep["decisive"]:
        out.update(status="unverified", error=f"timed trainer not verified: {sl['skipped']}, and "
                                              f"{rep.get('why')}")
    else:
        out["status"] = "ok"
    return out
