"""benchmarks.fusion: the CPU quick run passes its correctness check and measures every cell; the check fails
when fused members are mixed up or skip the engine's gradient freeze; the budget and an out-of-memory cell
give rows, not a crash. And every benchmark module accepts --quick."""

import importlib
import math
import pkgutil

import pytest
import torch
from test_benchmarks import one_thread, results_untouched  # noqa: F401  (autouse: nothing appended, one thread)

import benchmarks
from benchmarks import common, fusion

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    return common.synthetic_cifar100(train_per_class=8, test_per_class=1)


@pytest.mark.slow  # the whole benchmark, every cell: the longest single test outside Ray
def test_cpu_quick_run_passes_the_check_and_measures_every_cell():
    out = fusion.main(["--device", "cpu", "--quick", "--no-append"])
    assert [(r["net"], r["pass/fail"]) for r in out["check"]] == [("resnet18", "pass")]
    assert [(r["option"], r["trials"]) for r in out["cells"]] == [("single", 1), ("fused", 1), ("fused", 2),
                                                                  ("packed", 2)]
    assert all(isinstance(r["aggregate img/s"], float) and r["aggregate img/s"] > 0 for r in out["cells"])
    assert [r["best option"] in ("single x1", "fused x1", "fused x2", "packed x2") for r in out["projection"]] == [True]
    assert out["skipped"] == []


def test_mobilenetv2_fused_members_equal_the_members_alone(bench):
    """The net whose fp32 gradients are ill-conditioned (see the module docstring): exact in float64."""
    row = fusion.check("mobilenetv2", 3, 4, CPU, bench)
    assert row["pass/fail"] == "pass", row
    assert row["max rel. error, gradients"] < 1e-12 and row["max rel. error, loss"] < 1e-6


def stepped(bench, k=3, batch=4):
    members = fusion.check_members("lenet5", k, batch, CPU, bench)
    fused = fusion.Fused(members)
    x, y = fusion.draw(members[0].data, k, batch, members[0].head, members[0].generator)
    return fused, members, x.double(), y


def test_the_check_fails_when_members_are_mixed_up(bench):
    fused, members, x, y = stepped(bench)
    right = fusion.member_errors(fused, fused.step(x, y), members, x, y)
    assert max(right.values()) <= fusion.TOLERANCE, right
    fused, members, x, y = stepped(bench)
    swap = [1, 2, 0]  # every fused member trains on another member's batch
    wrong = fusion.member_errors(fused, fused.step(x[swap], y[swap]), members, x, y)
    assert wrong["gradients"] > 1e-3 and wrong["weights after the step"] > 1e-3, wrong


def test_the_check_fails_when_the_fused_step_skips_the_gradient_freeze(bench):
    fused, members, x, y = stepped(bench)
    assert any(not keep.all() for keep in fused.masking.grad_keep)  # task 0 owns weights: some are frozen
    fused.masking.grad_keep = [torch.ones_like(keep) for keep in fused.masking.grad_keep]
    errors = fusion.member_errors(fused, fused.step(x, y), members, x, y)
    assert errors["loss"] <= fusion.TOLERANCE and errors["gradients"] > 1e-3, errors


def test_a_check_that_crashes_is_a_failed_row(monkeypatch, bench):
    def crash(members):
        raise RuntimeError("no grouped convolution here")

    monkeypatch.setattr(fusion, "Fused", crash)
    row = fusion.check("lenet5", 2, 4, CPU, bench)
    assert row["pass/fail"] == "FAIL: RuntimeError: no grouped convolution here"


def test_an_out_of_memory_cell_is_a_row_and_the_budget_skips_cells(monkeypatch):
    def measure(cell, device, bench, args, single):
        if (cell.option, cell.trials) == ("fused", 2):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return 100.0 * cell.trials, None

    monkeypatch.setattr(fusion, "measure", measure)
    argv = ["--device", "cpu", "--no-append", "--nets", "lenet5", "--batches", "8", "--members", "1", "2"]
    out = fusion.main(argv)
    assert [(r["option"], r["trials"], r["aggregate img/s"]) for r in out["cells"]] == [
        ("single", 1, 100.0), ("fused", 1, 100.0), ("fused", 2, "OOM"), ("packed", 2, 200.0)]
    (projected,) = out["projection"]
    assert projected["best option"] == "packed x2"
    assert projected["CPU (this machine)-hours per seed, single trial"] == pytest.approx(
        2 * projected["CPU (this machine)-hours per seed, best"])
    out = fusion.main(argv + ["--budget-s", "1e-9"])
    assert out["cells"] == [] and len(out["skipped"]) == 4 and out["check"][0]["pass/fail"] == "pass"


def test_every_benchmark_module_accepts_quick(capsys):
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name != "common"]
    assert {"fusion", "packing", "throughput", "gpu_check"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as done:
            importlib.import_module(f"benchmarks.{name}").main(["--help"])
        assert done.value.code == 0 and "--quick" in capsys.readouterr().out, name


def test_projection_hours_are_the_paper_grid_over_the_rate():
    rows = [{"net": "resnet18", "batch": 64, "option": o, "trials": k, "aggregate img/s": v}
            for o, k, v in (("single", 1, 1000.0), ("fused", 16, 8000.0), ("packed", 16, "OOM"))]
    (row,) = fusion.projection(rows, "GPU")
    assert row["best option"] == "fused x16"
    assert row["GPU-hours per seed, best"] == pytest.approx(144 * 50_000 * 100 / 8000 / 3600)
    assert math.isclose(row["GPU-hours per seed, single trial"], 8 * row["GPU-hours per seed, best"])
