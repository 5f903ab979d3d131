"""mnist-bench compare: a planted 2x regression fails, resampled noise does not,
invalid cells are never compared as timings, and the rank test is right."""
import json
import math

import numpy as np
import pytest

from mnist_numba_bench.bench import compare
from mnist_numba_bench.bench.cli import main as cli
from fixtures.make_results import write_fixture


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return next(p for p in write_fixture(tmp_path_factory.mktemp("store")) if "xeon" in p)


def variant(baseline, directory, seed, change=lambda cell: None):
    """Run B: every valid cell's samples redrawn from the distribution A's came
    from (lognormal around the median, A's relative spread), then ``change``."""
    rng = np.random.default_rng(seed)
    lines = [json.loads(line) for line in open(baseline)]
    lines[0]["run_id"] = f"20250301-000000-fixture-xeon-{seed:06x}"
    for cell in lines[1:]:
        if cell["status"] == "ok":
            s = np.asarray(cell["samples_s"])
            spread = np.std(np.log(s), ddof=1)
            cell["samples_s"] = list(np.median(s) * np.exp(rng.normal(0, spread, len(s))))
            cell["median_s"] = float(np.median(cell["samples_s"]))
        change(cell)
    path = directory / (lines[0]["run_id"] + ".jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(path)


def is_target(cell):
    return (cell["kind"], cell["model"], cell["backend"], cell["batch_size"], cell["threads"]) == \
        ("epoch", "nielsen", "numba", 10, 4)


def slow_down_twice(cell):
    if is_target(cell):
        cell["samples_s"] = [2 * s for s in cell["samples_s"]]


def test_planted_2x_regression_is_flagged(baseline, tmp_path, capsys):
    b = variant(baseline, tmp_path, 1, slow_down_twice)
    _, _, rows = compare.compare_runs(baseline, b)
    flagged = [r for r in rows if r["verdict"] == "slower"]
    assert [(r["model"], r["backend"], r["batch_size"], r["threads"]) for r in flagged] == \
        [("nielsen", "numba", 10, 4)]
    assert flagged[0]["ratio"] == pytest.approx(2, rel=0.1)
    assert cli(["compare", baseline, b]) == 1
    assert "FAIL: 1 cells regressed" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_resampled_noise_is_not_flagged(baseline, tmp_path, seed):
    b = variant(baseline, tmp_path, seed)
    _, _, rows = compare.compare_runs(baseline, b)
    assert not [r for r in rows if r["verdict"] in ("slower", "faster", "broken")]
    assert cli(["compare", baseline, b]) == 0


def test_noise_false_positive_rate_stays_near_alpha():
    """Many draws of a noisy cell (25 % spread, 7 samples) against itself: the
    rank test alone would flag about alpha = 1 % of them."""
    rng = np.random.default_rng(0)
    cell = {"status": "ok"}
    flagged = 0
    for _ in range(300):
        a = dict(cell, samples_s=list(np.exp(rng.normal(0, 0.25, 7))))
        b = dict(cell, samples_s=list(np.exp(rng.normal(0, 0.25, 7))))
        flagged += compare.compare_cells(a, b)["verdict"] == "slower"
    assert flagged / 300 <= 0.02


def test_a_large_ratio_within_the_noise_is_too_noisy_not_a_regression():
    a = {"status": "ok", "samples_s": [1.0, 0.5, 1.9, 0.7, 1.4]}
    b = {"status": "ok", "samples_s": [1.25, 0.6, 2.0, 0.8, 1.3]}
    out = compare.compare_cells(a, b)
    assert out["ratio"] > 1.05 and out["p_slower"] > 0.05 and out["verdict"] == "too noisy"
    assert "reaches past ±10 %" in out["note"]


def test_tight_equal_samples_are_the_same():
    rng = np.random.default_rng(1)
    a = {"status": "ok", "samples_s": list(1 + 0.01 * rng.standard_normal(9))}
    b = {"status": "ok", "samples_s": list(1.02 + 0.01 * rng.standard_normal(9))}
    out = compare.compare_cells(a, b)
    assert out["verdict"] == "same" and 0.9 < out["ratio_low"] < out["ratio"] < out["ratio_high"] < 1.1


def test_too_few_samples_to_reach_alpha_is_said():
    out = compare.compare_cells({"status": "ok", "samples_s": [1.0, 1.01, 0.99]},
                                {"status": "ok", "samples_s": [2.0, 2.01, 1.99]})
    assert out["verdict"] == "too noisy" and "smallest possible p 0.05" in out["note"]


def test_invalid_cells_are_never_compared_as_timings(baseline, tmp_path):
    def break_target(cell):
        if is_target(cell):
            cell.update(status="invalid", error="parameters differ from numpy", samples_s=[],
                        median_s=None)
    b = variant(baseline, tmp_path, 5, break_target)
    _, _, rows = compare.compare_runs(baseline, b)
    target = next(r for r in rows if (r["model"], r["backend"], r["batch_size"], r["threads"]) ==
                  ("nielsen", "numba", 10, 4) and r["kind"] == "epoch")
    assert target["verdict"] == "broken" and target["ratio"] is None
    fused = next(r for r in rows if r["backend"] == "numba-fused")  # invalid on both sides
    assert fused["verdict"] == "not compared" and fused["ratio"] is None
    assert cli(["compare", baseline, b]) == 1


def test_run_ids_and_prefixes_resolve(baseline, tmp_path):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    target = results / "runs" / "20250101-120000-fixture-xeon-aaaaaa.jsonl"
    target.write_text(open(baseline).read())
    assert compare.resolve_run("20250101-120000-fixture-xeon-aaaaaa", str(results)) == str(target)
    assert compare.resolve_run("20250101-1200", str(results)) == str(target)
    with pytest.raises(ValueError, match="neither a file nor a run id"):
        compare.resolve_run("nope", str(results))


def test_bad_threshold_is_a_usage_error(baseline, capsys):
    assert cli(["compare", baseline, baseline, "--threshold", "0.9"]) == 2
    assert "--threshold must be above 1" in capsys.readouterr().err


# -- the rank test ------------------------------------------------------------------------

def test_exact_p_values_match_the_tables():
    assert compare.mann_whitney_greater([4, 5, 6], [1, 2, 3]) == pytest.approx(1 / 20)
    assert compare.mann_whitney_greater(range(6, 11), range(1, 6)) == pytest.approx(1 / math.comb(10, 5))
    assert compare.mann_whitney_greater([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)
    # U = 1 of 9 for x=[2,5,6] y=[1,3,4]: orderings with U >= 8 are 2 of 20
    assert compare.mann_whitney_greater([3, 5, 6], [1, 2, 4]) == pytest.approx(2 / 20)


def test_one_statistics_path_scipy_with_ties_and_for_large_samples():
    from scipy.stats import mannwhitneyu
    rng = np.random.default_rng(1)
    for x, y in (([1, 1, 2, 2], [1, 2, 2, 3]), (rng.normal(0.4, 1, 15), rng.normal(0, 1, 14)),
                 (rng.normal(0, 1, 9), rng.normal(0, 1, 9))):
        want = mannwhitneyu(x, y, alternative="greater").pvalue
        assert compare.mann_whitney_greater(x, y) == pytest.approx(want)
    assert compare.mann_whitney_greater([2, 2], [2, 2]) == 1.0
