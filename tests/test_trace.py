"""The step trace (`cldst train --trace FILE`, cldst/trace.py): its documented fields, and determinism."""

import hashlib
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cldst import continual, trace
from cldst.cli import build_parser, config_from_args, main
from cldst.data import load_benchmark
from cldst.masking import maskable_parameters
from cldst.models import build_model
from tests.engine_runs import small_config

LAYER_FIELDS = {"active", "weight_sum", "weight_abs", "state"}
UPDATE_FIELDS = LAYER_FIELDS | {"removed", "regrown", "removed_digest", "regrown_digest"}
TRAIN = ["train", "--dataset", "synthetic", "--num_tasks", "2", "--epochs", "1", "--batch_size", "64",
         "--update_frequency", "3", "--quiet"]


def traced_run(cfg, path):
    step_trace = trace.Trace(path)
    hooks = continual.Hooks(on_step=step_trace.step, on_update=step_trace.update)
    results = continual.run(cfg, load_benchmark("synthetic"), hooks)
    step_trace.close()
    return results, trace.read(path)


@pytest.fixture(scope="module")
def cli_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    main([*TRAIN, "--trace", str(path)])
    return trace.read(path)


def test_a_cli_trace_has_every_step_and_update_with_the_documented_fields(cli_trace):
    # synthetic: 120 training images per class, 5 classes per task -> 600 images, 10 batches of 64 (the last 24)
    names = set(maskable_parameters(build_model("mlp", 1, 8, 10)))
    for task in (0, 1):
        steps = [r for r in cli_trace if r["task"] == task and r["kind"] == "step"]
        updates = [r for r in cli_trace if r["task"] == task and r["kind"] == "update"]
        assert [r["step"] for r in steps] == list(range(1, 11))
        assert [r["step"] for r in updates] == [3, 6, 9]
    for record in cli_trace:
        assert set(record["layers"]) == names
        if record["kind"] == "step":
            assert set(record) == {"kind", "task", "step", "loss", "lr", "layers"}
            assert record["lr"] == 0.01 and np.isfinite(record["loss"])
            assert all(set(layer) == LAYER_FIELDS for layer in record["layers"].values())
            assert all(set(layer["state"]) == {"exp_avg", "exp_avg_sq"} for layer in record["layers"].values())
        else:
            assert set(record) == {"kind", "task", "step", "death_rate", "layers"}
            assert 0.005 <= record["death_rate"] <= 0.5
            assert all(set(layer) == UPDATE_FIELDS for layer in record["layers"].values())


def test_an_update_regrows_what_it_removes_and_keeps_the_counts(cli_trace):
    records = {(r["task"], r["step"], r["kind"]): r for r in cli_trace}
    for (task, step, kind), record in records.items():
        if kind != "update":
            continue
        before = records[(task, step, "step")]
        for name, layer in record["layers"].items():
            assert layer["removed"] == layer["regrown"] > 0
            assert layer["active"] == before["layers"][name]["active"]


def test_an_update_changes_the_layers_it_reports_and_a_step_the_weights(cli_trace):
    step_3, update_3, step_4 = cli_trace[2], cli_trace[3], cli_trace[4]
    assert (step_3["kind"], update_3["kind"], step_4["kind"]) == ("step", "update", "step")
    for name in step_3["layers"]:
        assert update_3["layers"][name]["removed_digest"] != update_3["layers"][name]["regrown_digest"]
        assert step_4["layers"][name]["weight_abs"] != update_3["layers"][name]["weight_abs"]


def test_two_identical_runs_trace_identically(tmp_path, cli_trace):
    main([*TRAIN, "--trace", str(tmp_path / "again.jsonl")])
    assert trace.read(tmp_path / "again.jsonl") == cli_trace
    main([*TRAIN, "--seed", "1", "--trace", str(tmp_path / "seed1.jsonl")])
    assert trace.read(tmp_path / "seed1.jsonl")[0] != cli_trace[0]


def test_sgd_traces_its_momentum_buffer(tmp_path):
    cfg = small_config(num_tasks=1, num_classes=2, optimizer="sgd", lr=0.05)
    _, records = traced_run(cfg, tmp_path / "sgd.jsonl")
    step = records[0]
    assert step["lr"] == 0.05
    for layer in step["layers"].values():
        assert set(layer["state"]) == {"momentum_buffer"}
        assert layer["state"]["momentum_buffer"][1] > 0


def test_tracing_does_not_change_the_run(tmp_path):
    cfg = small_config()
    plain = continual.run(cfg, load_benchmark("synthetic"))
    traced, _ = traced_run(cfg, tmp_path / "t.jsonl")
    assert [r.acc for r in traced] == [r.acc for r in plain]


def test_index_digest_is_the_sha1_of_the_ascending_flat_indices():
    chosen = torch.zeros(2, 3, dtype=torch.bool)
    chosen[0, 1] = chosen[1, 2] = True  # flat 1 and 5
    expected = hashlib.sha1(np.array([1, 5], dtype=np.int64).tobytes()).hexdigest()[:16]
    assert trace.index_digest(chosen) == expected
    assert trace.checksum(torch.tensor([1.0, -2.0])) == [-1.0, 3.0]


def test_the_lockstep_command_in_docs_parses_to_configuration_d():
    text = (Path(__file__).resolve().parents[1] / "docs" / "parity.md").read_text()
    block = text.split("<!-- lockstep command -->\n```bash\n", 1)[1].split("```", 1)[0]
    argv = shlex.split(block.replace("\\\n", " "))
    assert argv[:2] == [".venv/bin/cldst", "train"]
    args = build_parser().parse_args(argv[1:])
    cfg = config_from_args(args)
    assert args.trace == "D_seed0.jsonl"
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.prune, cfg.growth, cfg.sparse_init, cfg.density) == \
        ("sgd", 0.05, 0.9, "Taylor_FO", "gradient", "uniform", 0.2)
    assert (cfg.net, cfg.epochs, cfg.batch_size, cfg.update_frequency, cfg.protocol) == ("resnet18", 3, 64, 10, "paper")
