"""`python -m analysis.report RESULTS_DIR [RESULTS_DIR ...] [--out DIR]`: one folder with report.md,
tables/ (Markdown and CSV) and figures/ (PNG) for one or many experiments, even mid-sweep.

Bad input (missing folder, no cldst results, no trial yet, unknown option) is one line on
stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis import adaptive, figures, findings, looks, race_report, search, stats, tables
from analysis.best import Best, best_configs
from analysis.data import STATUSES, Loaded, load_all
from analysis.findings import Finding
from cldst.results import ResultsError, check_writable

USAGE_ERROR = 2
SKIPPED_NAMED = 5  # unreadable files named in the terminal; report.md lists them all


class UsageError(Exception):
    """Input the report cannot work with; the message is shown as is."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own prints usage over several lines
        raise UsageError(message)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m analysis.report",
                     description="Tables, findings, figures and report.md from cldst Parquet results.")
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULTS_DIR",
                        help="an experiment folder (holding tasks/ and runs/) or a folder of experiments")
    parser.add_argument("--out", type=Path, help="output folder (default: RESULTS_DIR/report for one input, "
                                                  "else report/ in the inputs' common parent folder)")
    return parser.parse_args(argv)


def default_out(inputs: list[Path]) -> Path:
    if len(inputs) == 1:
        return inputs[0] / "report"
    return Path(os.path.commonpath([p.resolve() for p in inputs])) / "report"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
        loaded = load_all(args.results, on_bad="skip")
        where = ", ".join(map(str, args.results))
        if loaded.runs.empty and loaded.skipped:  # files are there: say what they are, not "no results"
            raise UsageError(f"found {len(loaded.skipped)} result file(s) under {where} but could read none: "
                             f"{loaded.skipped[0][1]}")
        if loaded.runs.empty:
            raise UsageError(f"no trial results yet under {where}")
        out = args.out or default_out(args.results)
        try:  # a file in the way, no permission, a read-only or full disk: say so before writing anything
            check_writable(out)
        except ResultsError as err:
            raise UsageError(f"--out: {err}") from None
    except (UsageError, ResultsError) as err:
        first_line = (str(err).splitlines() or [""])[0]  # Arrow's messages can run over several lines
        print(f"analysis.report: error: {first_line}", file=sys.stderr)
        return USAGE_ERROR
    report = write_report(loaded, out, args.results, progress=lambda line: print(line, flush=True))
    counts = loaded.runs["status"].value_counts()
    print(f"report: {report}\n  {len(loaded.runs)} trials ({status_counts(counts)}) in "
          f"{len(loaded.experiments)} experiment(s); {len(loaded.skipped)} unreadable file(s) skipped")
    for path, _reason in loaded.skipped[:SKIPPED_NAMED]:
        print(f"  left out: {path}")
    if len(loaded.skipped) > SKIPPED_NAMED:
        print(f"  ... and {len(loaded.skipped) - SKIPPED_NAMED} more (the report lists each, with its reason)")
    return 0


def status_counts(counts: pd.Series) -> str:
    return ", ".join(f"{int(counts.get(status, 0))} {status}" for status in STATUSES)


def write_report(loaded: Loaded, out: Path, inputs: Sequence[Path],
                 progress: Callable[[str], None] = lambda _line: None) -> Path:
    """Write tables/, figures/ and report.md under `out`; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    static = adaptive.static_part(loaded)  # a PBT member's schedule is no grid configuration: its own section
    table = tables.summary(static.runs)
    for path in tables.write_tables(table, out / "tables"):
        progress(f"wrote {path.relative_to(out)}")
    pbt = adaptive.compare(loaded)  # one row per adaptive experiment: each method's choice and its ACC
    rows = verdicts(static, pbt, table)
    rows.to_csv(out / "tables" / "findings.csv", index=False)
    progress("wrote tables/findings.csv")
    found = findings.sentences(rows, table, static.runs)
    bests = best_configs(static.runs, table)
    drawn = _figures(static, table, bests, rows, out, progress)
    sections = [_header(loaded, inputs), _what_was_run(loaded), _results(table), _findings(found, rows),
                _figures_section(drawn), _best(bests), *_search_sections(loaded, out, progress),
                *race_report.sections(loaded), *looks.sections(loaded),
                *adaptive.sections(loaded, out, pbt, rows[rows["topic"] == "adaptive"], progress)]
    report = out / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    progress(f"wrote {report.relative_to(out)}")
    return report


def verdicts(static: Loaded, pbt: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every comparison the report makes (findings.COLUMNS): each split's claims adjusted as that split's family,
    and the adaptive comparisons as a family per adaptive setting (Holm). `pbt`: `adaptive.compare`'s frame."""
    grid = findings.comparisons(static.runs, table)
    adaptive_rows = adaptive.comparisons(pbt)
    families = [stats.family(rows, name)
                for name, rows in adaptive_rows.groupby("family", sort=False)] if not adaptive_rows.empty else []
    frames = [frame for frame in (grid, *families) if not frame.empty]
    return pd.concat(frames, ignore_index=True).reindex(columns=findings.COLUMNS) if frames else grid


def _figures(loaded: Loaded, table: pd.DataFrame, bests: list[Best], rows: pd.DataFrame, out: Path,
             progress: Callable[[str], None]) -> list[tuple[str, Path | None]]:
    """(caption, path or None when there was nothing to draw) per figure."""
    folder = out / "figures"
    plan = [
        ("Final ACC against density, a line per init x growth (mean ± std over seeds), one panel per split.",
         lambda: figures.acc_vs_density(table, folder / "acc_vs_density.png")),
        ("Accuracy matrix R[i, j] of the best run of each split: accuracy on task j after learning task i.",
         lambda: figures.accuracy_matrices(bests, folder / "accuracy_matrix.png")),
        ("Average accuracy on the tasks seen so far as tasks are learned, a curve per init x growth.",
         lambda: figures.avg_acc_over_tasks(loaded.tasks, loaded.runs, table, folder / "avg_acc_over_tasks.png")),
        ("Capacity used (weights owned by any task) and reused fraction (share of a new task's mask already "
         "owned by earlier tasks) as tasks are learned.",
         lambda: figures.capacity_over_tasks(loaded.tasks, loaded.runs, table, folder / "capacity_over_tasks.png")),
        ("Every comparison of Findings: the mean seed-paired difference a - b with its 95% CI, a panel per split "
         "(and per adaptive setting); filled: real within its family, hollow: not established, cross: not tested (one "
         "seed).",
         lambda: figures.comparisons(rows, folder / "comparisons.png")),
    ]
    drawn = []
    for caption, draw in plan:
        path = draw()
        progress(f"wrote {path.relative_to(out)}" if path else f"skipped figure (no finished run): {caption}")
        drawn.append((caption, path))
    return drawn


def _header(loaded: Loaded, inputs: Sequence[Path]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# cldst results report\n\nGenerated {stamp} from {', '.join(f'`{p}`' for p in inputs)} "
            f"(experiments: {', '.join(loaded.experiments)}).")


def _what_was_run(loaded: Loaded) -> str:
    runs = loaded.runs
    nets = runs.groupby("benchmark")["net"].unique()
    lines = ["## What was run", "",
             f"- Trials: {len(runs)} ({status_counts(runs['status'].value_counts())}). Only `ok` trials enter "
             "means; the others are counted in the tables and listed below.",
             "- Benchmarks: " + "; ".join(f"{b} ({', '.join(sorted(n))})" for b, n in nets.items()),
             f"- Task splits (tasks x classes): {', '.join(sorted(runs['split'].unique()))}",
             f"- Seeds: {', '.join(map(str, sorted(runs['seed'].unique())))}",
             # dropna: an adaptive (PBT) run whose setting varied over its tasks has none in its runs row
             f"- Densities: {', '.join(f'{d:g}' for d in sorted(runs['density'].dropna().unique()))}; inits: "
             f"{', '.join(sorted(runs['sparse_init'].unique()))}; growth: "
             f"{', '.join(sorted(runs['growth'].dropna().unique()))}"]
    left_out = runs[runs["status"] != "ok"]
    if not left_out.empty:
        # Where a trial got to: the average accuracy after its last reported task that it kept (a PBT member's
        # discarded task was replaced by a donor's model).
        kept = loaded.tasks[loaded.tasks["discarded"].fillna(False).astype(bool).eq(False)]
        latest = kept.groupby(["experiment", "trial_id"])["avg_acc"].last().rename("latest")
        left_out = left_out.join(latest, on=["experiment", "trial_id"])
        done = left_out["tasks_done"].map(lambda n: "?" if pd.isna(n) else str(int(n)))
        lines += ["", "Trials left out of the means:", "", tables.markdown(pd.DataFrame({
            "experiment": left_out["experiment"], "trial": left_out["trial_id"], "status": left_out["status"],
            "config": describe(left_out), "tasks done": done + " of " + left_out["num_tasks"].astype(str),
            "last avg ACC": left_out["latest"].map(tables.number),
            "error": [str(e).splitlines()[0] if isinstance(e, str) else "–" for e in left_out["error"]]}))]
    if loaded.skipped:
        lines += ["", f"Unreadable result files left out ({len(loaded.skipped)}):", ""]
        lines += [f"- `{path}`: {reason}" for path, reason in loaded.skipped]
    return "\n".join(lines)


def describe(runs: pd.DataFrame) -> pd.Series:
    """Each run's configuration in a few words."""
    return (runs["benchmark"] + " " + runs["net"] + " " + runs["split"] + " " + runs["sparse_init"] + "/"
            + runs["growth"].astype(str) + " density " + runs["density"].map("{:g}".format) + " seed "
            + runs["seed"].astype(str))


def _results(table: pd.DataFrame) -> str:
    lines = ["## Final ACC and BWT over seeds", "",
             "Mean ± sample std (ddof=1) over the `ok` runs of each configuration; `–` where a single run "
             "gives no spread. FWT is the reference's forward transfer. CSV: `tables/summary.csv`, which adds the "
             "95% t-interval of each mean test ACC over its seeds.", "",
             tables.summary_markdown(table), "", "## The paper's comparison: final ACC (%)", "",
             "Rows init x growth, columns density; one table per task split. CSV: `tables/comparison_*.csv`."]
    for title, slug, rows in tables.panels(table):
        lines += ["", f"### {title}", "", tables.comparison_markdown(rows), "",
                  f"(`tables/comparison_{slug}.csv`)"]
    return "\n".join(lines)


def _findings(found: list[Finding], rows: pd.DataFrame) -> str:
    lines = ["## Findings", "",
             "Every \"beats\" and \"wins\" below is a seed-paired test (docs/guides/analysis.md): the paired t-test of "
             "the per-seed differences in final test ACC and its 95% CI, corrected within a family. Each benchmark "
             "split is one family of main effects, each with its own variance: ERK against uniform (runs paired "
             "on seed, growth criterion and density, averaged within the seed over the cells both ran) and each "
             "pair of growth criteria (paired on seed, init and density, averaged likewise). A main effect's cells "
             "(init: each density; growth: each init x density) are tested only once it is real. The familywise "
             f"error rate of each family is {stats.ALPHA:g}: `{stats.REAL}` only where the adjusted p < "
             f"{stats.ALPHA:g}; otherwise \"cannot be told apart\" where the 95% CI excludes a 1-point difference, "
             "\"too few seeds to tell\" with the seeds a difference of the size seen would need, or \"not tested\" "
             "(one seed). A setting the sweep crossed that the paper compares (prune criterion, death rate, "
             "optimizer) is a family of its own per split of the runs that differ only in it, its main effects paired "
             "on seed, init, growth and density. Adaptive comparisons form a family per adaptive setting. One row "
             "per claim: `tables/findings.csv`."]
    panel = None
    for finding in found:
        if finding.panel != panel:
            panel = finding.panel
            lines += ["", f"### {panel}", ""]
        lines.append(f"- {finding.text}")
    if not found:
        lines += ["", "No findings yet: no configuration has a finished (`ok`) run."]
    return "\n".join(lines)


def _figures_section(drawn: list[tuple[str, Path | None]]) -> str:
    lines = ["## Figures"]
    for caption, path in drawn:
        lines += ["", f"![{caption}](figures/{path.name})" if path else "(not drawn: no finished run yet)",
                  "", caption]
    return "\n".join(lines)


def _best(bests: list[Best]) -> str:
    lines = ["## Best configuration per split", "",
             "Chosen on mean final validation ACC (a held-out share of the training images) where the runs "
             "held a validation split, with its test ACC beside it; test data never chooses there. Ties go to "
             "more runs, then the smaller std. The command reruns the configuration's best seed (by the same "
             "metric) exactly."]
    for best in bests:
        config = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.config.items())
        run = best.run
        interval = (f"; 95% CI {best.acc_ci[0]:.2f} to {best.acc_ci[1]:.2f}" if not pd.isna(best.acc_ci[0])
                    else "; no interval from one run")
        if best.on_validation:
            chosen = [f"- chosen on final validation ACC {tables.mean_std(best.val_mean, best.val_std)}; its "
                      f"final test ACC {tables.mean_std(best.acc_mean, best.acc_std)} over {best.n_ok} run(s)"
                      f"{interval}"]
            seed = f"val ACC {run['val_acc']:.2f}, test ACC {run['acc']:.2f}"
            metric = "validation ACC"
        else:
            chosen = ["- **chosen on test ACC: these runs held no validation split (--val-fraction 0), so this "
                      "choice is optimistically biased**",
                      f"- final ACC {tables.mean_std(best.acc_mean, best.acc_std)} over {best.n_ok} run(s){interval}"]
            seed = f"ACC {run['acc']:.2f}"
            metric = "test ACC"
        if best.compared and not best.pairs:
            chosen.append(f"- compared with the other {best.compared}: not tested (1 seed)")
        elif best.compared:
            untold = ", ".join(best.untold) if best.untold else "none"
            chosen.append(f"- not told apart from it on {metric} with these seeds, each with its mean gap to it "
                          f"(seed-paired; Holm over all {best.pairs} tested pairs of the split's configurations, "
                          f"which stays valid after choosing the best; an open gap calls for seeds, it is no tie): "
                          f"{untold}")
        if best.ahead:  # possible where seeds are missing: the mean and the matched seeds disagree
            chosen.append(f"- better than it on {metric} for real on the seeds both ran: {', '.join(best.ahead)}")
        lines += ["", f"### {best.panel}", "", f"- {config}", *chosen,
                  f"- best seed {run['seed']} (trial `{run['trial_id']}`, experiment `{run['experiment']}`): "
                  f"{seed}, BWT {run['bwt']:.2f}", "", "```", str(run["command"]), "```"]
    if not bests:
        lines += ["", "None yet: no finished (`ok`) run."]
    return "\n".join(lines)


def _search_sections(loaded: Loaded, out: Path, progress: Callable[[str], None]) -> list[str]:
    sections = []
    for found in search.searches(loaded):
        steps = search.history(found)
        ranked = search.importances(found)
        history_png = search.history_figure(found, out / "figures" / f"search_history_{found.experiment}.png")
        importance_png = search.importance_figure(
            found, ranked, out / "figures" / f"param_importance_{found.experiment}.png")
        for path in (history_png, importance_png):
            if path:
                progress(f"wrote {path.relative_to(out)}")
        name = search.VALUE_NAMES[found.metric]
        lines = [f"## Search: {found.experiment} (Optuna study `{found.experiment}` in `{found.study.name}`)", ""]
        if found.metric == "acc":
            lines += [f"**This search selected on test ACC ({found.why_test}): its best configuration's test ACC is "
                      "optimistically biased.**", ""]
        lines.append(f"{len(steps)} trials ended ({int(steps['value'].notna().sum())} ok); best {name} so far "
                     + (f"{steps['best_so_far'].iloc[-1]:.2f}." if steps["value"].notna().any() else "–."))
        if history_png:
            lines += ["", f"![search history](figures/{history_png.name})", "",
                      f"The {name} of each trial in finishing order (dots), failed trials (crosses), best so far "
                      "(line)."]
        lines += ["", f"Parameter importances, computed by {ranked.source}:", ""]
        lines.append(tables.markdown(ranked.values.rename("importance").rename_axis("parameter").reset_index())
                     if not ranked.values.empty else "(no parameter varies among the finished trials)")
        if importance_png:
            lines += ["", f"![parameter importances](figures/{importance_png.name})"]
        sections.append("\n".join(lines))
    return sections


if __name__ == "__main__":
    sys.exit(main())
