"""Whatever a sweep crosses, the report keeps apart: for every RunConfig field `--grid` can cross (per-task schedules
too), two settings of it never share a mean in the summary, a comparison panel or a findings row.

Each case writes 2 settings x 2 inits x 2 seeds with cldst's own writer: every run of the first setting scores 60,
of the second 90, so a mean of 75 anywhere would be two settings averaged together. Growth and density vary inside a
panel (its rows and columns); every other field makes panels of its own.

Two per-task schedules of one field are still averaged together: the runs row stores a schedule that varies as null
(cldst.results._constant), and analysis.data._tidy adds config_json's fields only where no column of that name exists,
so the schedule never reaches tables.group_keys. Those cases are expected to fail until the analysis keys on it."""

import pytest
from analysis_fixture import Writer

import analysis
from analysis import claims, figures, findings, tables
from analysis.data import SCHEDULE
from cldst.config import PER_TASK_FIELDS, RunConfig

pytestmark = pytest.mark.timeout(60)

SCHEDULE_A, SCHEDULE_B = (0.2, 0.1, 0.1, 0.1, 0.1), (0.1, 0.1, 0.1, 0.1, 0.2)
CROSSED = {  # field -> the RunConfig settings (over digits' defaults) of its two values
    "benchmark": ({"benchmark": "digits"}, {"benchmark": "synthetic"}),
    "net": ({"net": "mlp"}, {"net": "lenet5"}),
    "num_classes": ({"num_classes": 10, "classes_per_task": 2}, {"num_classes": 8, "classes_per_task": 2}),
    "num_tasks": ({"num_tasks": 5}, {"num_tasks": 4}),
    "classes_per_task": ({"classes_per_task": 2}, {"classes_per_task": 5}),
    "class_order_seed": ({"class_order_seed": None}, {"class_order_seed": 1}),
    "prune": ({"prune": "magnitude"}, {"prune": "Taylor_FO"}),
    "growth": ({"growth": "random"}, {"growth": "momentum"}),
    "density": ({"density": 0.2}, {"density": 0.1}),
    "death_rate": ({"death_rate": 0.5}, {"death_rate": 0.3}),
    "update_frequency": ({"update_frequency": 10}, {"update_frequency": 20}),
    "isolate": ({"isolate": True}, {"isolate": False}),
    "optimizer": ({"optimizer": "adam"}, {"optimizer": "sgd"}),
    "lr": ({"lr": 0.01}, {"lr": 0.003}),
    "momentum": ({"momentum": 0.9}, {"momentum": 0.5}),
    "weight_decay": ({"weight_decay": 0.0}, {"weight_decay": 1e-4}),
    "epochs": ({"epochs": 3}, {"epochs": 2}),
    "batch_size": ({"batch_size": 32}, {"batch_size": 64}),
    "eval_batch_size": ({"eval_batch_size": 128}, {"eval_batch_size": 256}),
    "keep_best_epoch": ({"keep_best_epoch": True}, {"keep_best_epoch": False}),
    "protocol": ({"protocol": "clean"}, {"protocol": "paper"}),
    "eval_head": ({"eval_head": "task"}, {"eval_head": "all"}),
    "precision": ({"precision": "bf16"}, {"precision": "fp32"}),
    "val_fraction": ({"val_fraction": 0.0}, {"val_fraction": 0.1}),
    "density schedule": ({"density": SCHEDULE_A}, {"density": SCHEDULE_B}),
    "growth schedule": ({"growth": ("random",) * 4 + ("momentum",)}, {"growth": ("momentum",) + ("random",) * 4}),
    "prune schedule": ({"prune": ("magnitude",) * 4 + ("SET",)}, {"prune": ("SET",) + ("magnitude",) * 4}),
    "death_rate schedule": ({"death_rate": (0.5,) * 4 + (0.3,)}, {"death_rate": (0.3,) + (0.5,) * 4}),
    "update_frequency schedule": ({"update_frequency": (10,) * 4 + (20,)}, {"update_frequency": (20,) + (10,) * 4}),
}
ACC = (60.0, 90.0)
WITHIN_PANEL = ("growth", "density")
COMPARED = [question.factor for question in claims.COMPARED]


def test_every_field_a_sweep_crosses_has_a_case():
    crossable = {name for name in RunConfig.__dataclass_fields__ if name not in ("seed", "device", "sparse_init")}
    assert crossable <= {case.split()[0] for case in CROSSED}  # sparse_init: crossed inside every panel


@pytest.mark.parametrize("case", list(CROSSED))
def test_two_settings_of_a_crossed_field_never_share_a_mean(case, tmp_path):
    writer = Writer(tmp_path, "crossed")
    for settings, acc in zip(CROSSED[case], ACC, strict=True):
        for init in ("ERK", "uniform"):
            for seed in (0, 1):
                given = {"benchmark": "digits", "sparse_init": init, "seed": seed, **settings}
                cfg = RunConfig(**given).resolve().to_dict()
                writer.trial(cfg, acc, val=acc if cfg["val_fraction"] else None)
    runs = analysis.load(tmp_path)
    table = tables.summary(runs)
    keys = [field + SCHEDULE for field in PER_TASK_FIELDS]  # a schedule keys the run
    assert [k for k in keys if k in runs.columns] == ([case.split()[0] + SCHEDULE] if case.endswith(" schedule")
                                                      else [])
    tasks = analysis.load(tmp_path, kind="tasks")
    assert figures.avg_acc_over_tasks(tasks, runs, table, tmp_path / "curves.png").is_file()  # grouped as the table
    assert sorted(table["acc_mean"]) == [60.0, 60.0, 90.0, 90.0], table  # one row per setting x init
    drawn = tables.panels(table)  # a comparison table and a figure panel each
    apart = [[60.0, 90.0]] if case in WITHIN_PANEL else [[60.0], [90.0]]
    assert sorted(sorted(set(rows["acc_mean"])) for _title, _slug, rows in drawn) == apart
    assert len({title for title, _slug, _rows in drawn}) == len({slug for _t, slug, _r in drawn}) == len(apart)
    rows = findings.comparisons(analysis.ok_runs(runs), table)
    compared = rows["panel"].str.endswith(" compared")
    field, varies_over_tasks = case.split()[0], case.endswith(" schedule")
    if varies_over_tasks and field in WITHIN_PANEL:  # a cell needs one density and one criterion: no claim
        assert rows.empty
    else:
        assert set(rows.loc[~compared, "panel"]) == {title for title, _slug, _rows in drawn}
        assert set(rows.loc[~compared, "n_pairs"]) == {2}  # two seeds each: no pair across two settings
    # the settings the paper compares are also compared with each other, paired on the seed
    assert set(rows.loc[compared, "topic"]) == (
        {field, f"{field} cell"} if field in COMPARED and not varies_over_tasks else set())
