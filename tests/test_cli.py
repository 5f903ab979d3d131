"""The command line's own promises: a complete --help for every command, one
name per concept, `list` answered from a per-environment cache that a change
or a broken file makes it probe again, and `run --no-download`."""
import json
import os
import subprocess
import sys

import pytest

from mnist_numba_bench.bench import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mnist_bench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mnist_numba_bench.bench.cli", *args], cwd=ROOT,
                          env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def test_top_level_help_is_whole_sentences_and_the_usual_path():
    out = mnist_bench("--help")
    assert out.returncode == 0
    text = out.stdout
    assert cli.DESCRIPTION.splitlines()[0] in text and text.count("stored, reported and compared.") == 1
    assert "the usual path:" in text and "mnist-bench run --quick" in text
    for command in cli.COMMANDS:
        assert f"    {command} " in text


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_a_help(command):
    out = mnist_bench(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: mnist-bench {command}")
    assert cli.COMMANDS[command][1] in " ".join(out.stdout.split())
    assert "--repeats" not in out.stdout  # one name: --rounds


@pytest.mark.parametrize("command", ["run", "kernels", "gpu", "tune"])
def test_rounds_is_the_one_name_and_repeats_still_reads(command):
    parser = cli.OneLineParser(prog=f"mnist-bench {command}")
    module = __import__(f"mnist_numba_bench.bench.{cli.COMMANDS[command][0][1:]}", fromlist=["x"])
    module.add_arguments(parser)
    assert parser.parse_args(["--rounds", "4"]).rounds == 4
    assert parser.parse_args(["--repeats", "6"]).rounds == 6


def test_list_is_kept_per_environment_and_probed_again_when_broken(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path))
    rows, probed = cli.probe_backends()
    (kept,) = list(tmp_path.glob("backends-*.json"))
    names = [r["backend"] for r in rows]
    assert "numpy" in names and "numba-fused" in names
    assert next(r for r in rows if r["backend"] == "numpy")["available"]
    # the kept answer is what `list` prints: marked, it comes back marked
    doc = json.loads(kept.read_text())
    doc["rows"][0]["description"] = "KEPT ANSWER"
    kept.write_text(json.dumps(doc))
    assert cli.main(["list"]) == 0
    assert "KEPT ANSWER" in capsys.readouterr().out
    # --refresh probes again and rewrites it
    assert cli.main(["list", "--refresh"]) == 0
    assert "KEPT ANSWER" not in capsys.readouterr().out
    assert "KEPT ANSWER" not in kept.read_text()
    # a broken file is probed again, not an error
    kept.write_text("{ not json")
    assert cli.main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [b["backend"] for b in listed["backends"]] == names
    assert json.loads(kept.read_text())["rows"]
    # another environment (a variable that decides availability) is another answer
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "0" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "1")
    cli.probe_backends()
    assert len(list(tmp_path.glob("backends-*.json"))) == 2


def test_run_no_download_refuses_data_it_does_not_have(tmp_path):
    out = mnist_bench("run", "--dataset", "mnist", "--no-download", "--backends", "numpy",
                      "--results-dir", str(tmp_path / "results"),
                      env={"MNIST_BENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "downloads are off" in lines[0], out.stderr
    assert not (tmp_path / "results").exists()
