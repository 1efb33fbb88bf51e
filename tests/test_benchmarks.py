"""Each benchmark's command path stays importable and runnable: tiny sizes, the mlp, nothing appended."""

import math

import pytest
import torch

from benchmarks import (
    checkpoint_cost,
    common,
    gpu_check,
    memory,
    packing,
    racing,
    results_scale,
    scaling,
    throughput,
    update_cost,
)

TINY = ["--device", "cpu", "--no-append", "--warmup", "1", "--steps", "1"]


def numbers(rows, skip=()):
    return [v for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k not in skip]


def assert_positive(rows, skip=()):
    values = numbers(rows, skip)
    assert values and all(math.isfinite(v) and v > 0 for v in values)


@pytest.fixture(autouse=True)
def results_untouched(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    yield
    assert not (tmp_path / "RESULTS.md").exists()


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny ops on a busy machine: one thread (here and in spawned children) avoids waiting on a descheduled one."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_throughput():
    out = throughput.main(TINY + ["--nets", "mlp", "--batches", "8", "--densities", "0.2", "0.1",
                                  "--growths", "random", "momentum", "--update-repeats", "1", "--loader-workers", "0"])
    assert [(r["net"], r["batch"]) for r in out["baselines"]] == [("mlp", 8)]
    assert [(r["density"], r["growth"]) for r in out["dst"]] == [(0.2, "random"), (0.2, "momentum"),
                                                                 (0.1, "random"), (0.1, "momentum")]
    assert {"b/a uf100", "b/a uf400", "b/c uf100"} <= set(out["dst"][0])
    assert_positive(out["baselines"] + out["dst"])


def test_update_cost():
    out = update_cost.main(TINY + ["--nets", "mlp", "--batch", "8", "--repeats", "1", "--test-per-class", "1"])
    assert [(r["prune"], r["growth"]) for r in out["updates"]] == update_cost.CRITERIA
    assert [r["after task"] for r in out["evals"]] == [1, 5, 9]
    assert_positive(out["updates"] + out["evals"])


def test_memory():
    out = memory.main(["--device", "cpu", "--no-append", "--nets", "mlp", "--tasks", "2", "--batch", "8"])
    rows = out["memory"]
    assert [r["state"] for r in rows] == ["dense model alone", "dense training (Adam)", "2-task run"]
    assert rows[-1]["mask bytes/weight/task"] == 0.125  # finished tasks' masks are packed bits
    assert rows[-1]["state MB"] > rows[0]["state MB"]
    assert_positive(rows[-1:], skip=("peak above idle MB",))


def test_packing():
    out = packing.main(TINY + ["--nets", "mlp", "--trials", "1", "2", "--batch", "8", "--rounds", "1"])
    assert [(r["net"], r["trials"]) for r in out["packing"]] == [("mlp", 1), ("mlp", 2)]
    assert [r["best packing (trials)"] in (1, 2) for r in out["projection"]] == [True]
    assert_positive(out["packing"] + out["projection"])


def test_scaling():
    out = scaling.main(TINY + ["--net", "mlp", "--tasks", "2", "4", "--batch", "8", "--train-per-class", "2",
                               "--test-per-class", "1", "--update-frequency", "2", "--rounds", "1"])
    assert [r["tasks"] for r in out["runs"]] == [2, 4]
    assert [r["tasks"] for r in out["bookkeeping"]] == [2, 4]
    assert_positive(out["runs"] + out["bookkeeping"])


def test_checkpoint_cost_quick():
    """Two real sweeps (about 30 s): num_to_keep 1 keeps one checkpoint per trial, None keeps all 40."""
    rows = checkpoint_cost.main(["--quick", "--no-append"])["rows"]
    assert [(r["num_to_keep"], r["checkpoints kept"]) for r in rows] == [("1", 8), ("None", 40)]
    assert_positive(rows)


def test_racing_prints_its_tables_with_the_error_rate_and_the_fixed_designs():
    out = racing.main(["--reps", "10", "--tied-reps", "10", "--no-append"])
    assert len(out["tied"]) == len(racing.PLANS) * len(racing.GAPS)
    assert [r["design"] for r in out["power"][:5]] == ["5 10 20 40", "4 8 16 32 64", "fixed 5", "fixed 10", "fixed 40"]
    assert all(0 <= r["declares the best"] <= 1 and r["runs"] > 0 for r in out["power"])


def test_results_scale_reads_every_row_and_names_bad_files():
    """24 trials: load and the bare scan agree on every row, before and after compaction (else it exits), and the
    report names a stray file and a truncated part and merges neither."""
    (record,) = results_scale.main(["--quick", "--sizes", "24", "--no-append"])
    assert record["bad files named"] == "both, neither merged"
    assert_positive([record], skip=("bad files named",))


def test_gpu_check_cpu_quick_passes_every_check(capsys):
    assert gpu_check.main(["--device", "cpu", "--quick", "--no-append"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    rows = [dict(zip(cells[0], row, strict=True)) for row in cells[1:]]
    runs = [r["setting"] for r in rows if r["check"] == "isolation + counts"]
    assert {s.split()[0] for s in runs} == {"resnet18", "mobilenetv2", "vgg16", "lenet5", "mlp"}
    assert {tuple(s.split()[1:]) for s in runs if s.startswith("mlp")} == {
        (i, g) for i in ("uniform", "ERK") for g in ("random", "unfired", "momentum", "gradient")}
    assert [r["check"] for r in rows[len(runs):]] == ["resume", "resume", "bf16 vs fp32", "sweep"]
    assert all(r["pass/fail"] == "pass" for r in rows), rows
    assert rows[-1]["result"] == "4 trials ok on cpu"


def test_gpu_check_finds_a_moved_owned_weight_a_changed_accuracy_and_a_wrong_count(monkeypatch):
    cfg = gpu_check.config("mlp", "ERK", "random", gpu_check.QUICK, torch.device("cpu"))
    results, states = gpu_check.train(cfg, gpu_check.generated_benchmark(gpu_check.QUICK, "mlp"))
    assert gpu_check.isolation_problems(cfg, results, states) == [] and gpu_check.count_problems(cfg, states) == []
    masks = gpu_check.task_masks(states[-1])
    name, mask = next(iter(masks[0].items()))
    states[1]["model"][name][tuple(mask.nonzero()[0].tolist())] += 1.0  # a weight task 0 owns
    assert gpu_check.isolation_problems(cfg, results, states) == [
        f"task 1 moved 1 weights of {name} owned by earlier tasks"]
    results[1].acc[0] += 1.0
    assert gpu_check.isolation_problems(cfg, results, states)[0].startswith("after task 1: accuracy of tasks [0]")
    masks[1][name] = masks[1][name].clone()
    masks[1][name].view(-1)[0] ^= True  # one weight more or less in task 1's mask
    monkeypatch.setattr(gpu_check, "task_masks", lambda state: masks)
    problems = gpu_check.count_problems(cfg, states)
    assert len(problems) == 1 and problems[0].startswith(f"task 1 {name}: ")


def test_gpu_check_finds_a_resume_that_loses_state(monkeypatch, tmp_path):
    load = gpu_check.checkpoint.load

    def nudged(path, config):  # the checkpoint's weights come back slightly off
        state = load(path, config)
        state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
        return state

    assert gpu_check.check_resume("mlp", gpu_check.QUICK, torch.device("cpu"), tmp_path)[1]
    monkeypatch.setattr(gpu_check.checkpoint, "load", nudged)
    result, passed = gpu_check.check_resume("mlp", gpu_check.QUICK, torch.device("cpu"), tmp_path)
    assert not passed and "differs" in result and "not bitwise reproducible" not in result


def test_precision_tolerance_is_three_binomial_standard_errors_and_at_least_two_points():
    assert gpu_check.precision_tolerance(50.0, 200) == pytest.approx(300 * math.sqrt(2 * 0.25 / 200))  # 15 points
    assert gpu_check.precision_tolerance(99.9, 10_000) == 2.0
