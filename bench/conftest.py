"""pytest-benchmark suites of bench/ (`pytest bench/ --benchmark-only`): shared
options, and the machine/version record that `mnist-bench import` reads back."""


def pytest_addoption(parser):
    parser.addoption("--bench-samples", type=int, default=2048,
                     help="training images per timed epoch in test_bench_epochs (default 2048)")


def pytest_benchmark_update_machine_info(config, machine_info):
    from bench.machine import machine_info as ours, versions
    machine_info["mnist_bench"] = {"machine": ours(), "versions": versions()}
