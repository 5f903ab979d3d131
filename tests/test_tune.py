"""`mnist-bench tune` times its candidates through the supervisor's rounds and the
kernel unit (validated, timed, checked again through the timed buffers), in the
process that compiled them: a wrong candidate is dropped, never timed."""
import numpy as np

from mnist_numba_bench.bench import tune


def test_candidates_are_validated_timed_and_checked_again(monkeypatch):
    monkeypatch.setattr(tune, "SHAPES", [(48, 40, 36), (20, 64, 24)])

    def right(a, b, c, parallel):
        np.matmul(a, b, out=c)

    def wrong(a, b, c, parallel):
        np.matmul(a, b, out=c)
        c[:, -1] = 0

    calls = {}

    def late(a, b, c, parallel):  # right on every check, wrong from its 4th call on a shape
        calls[a.shape] = calls.get(a.shape, 0) + 1
        np.matmul(a, b, out=c)
        if calls[a.shape] >= 4:
            c[0] = 0

    log = []
    rates = tune.measure({"right": right, "wrong": wrong, "late": late}, threads=1, rounds=3,
                         log=log.append)
    assert set(rates) == {"right"}
    assert all(g > 0 for g in rates["right"].values()) and len(rates["right"]) == 2
    text = "\n".join(log)
    assert "wrong [48, 40, 36]: invalid: wrong on shape" in text
    assert "late [48, 40, 36]: invalid: wrong after timing" in text
