"""How a task's classifier rows fill up: `cldst train` with the classifier's mask recorded after every update.

    python scripts/head_rows.py HEAD_JSON -- <cldst train flags>

Runs `cldst train` unchanged and writes HEAD_JSON: one record per prune-and-regrow update, with the task,
the update's number within the task, the density of the task's own classifier rows and the number of
active weights in every other class's rows. docs/parity.md uses it to compare the pruning at exact zeros
before and after the change to it (in tasks >= 1 the other classes' rows start at 0 and get no gradient).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))  # the cldst of the current folder (a checkout of another commit, too)

from cldst import cli, masking  # noqa: E402

HEAD = "classifier.weight"


def recording(records: list[dict]) -> object:
    """Masking.update, then one record of the classifier's mask."""
    update = masking.Masking.update

    def update_and_record(self: masking.Masking, *args: object, **kwargs: object) -> None:
        update(self, *args, **kwargs)
        rows = self.mask[HEAD]  # (num_classes, features)
        own = slice(self.task * self.classes_per_task, (self.task + 1) * self.classes_per_task)
        others = rows.clone()
        others[own] = False
        numbers = [r["update"] for r in records if r["task"] == self.task]
        records.append({"task": self.task, "update": len(numbers) + 1, "own_density": float(rows[own].float().mean()),
                        "other_rows_active": int(others.sum()), "head_active": int(rows.sum())})

    return update_and_record


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python scripts/head_rows.py HEAD_JSON -- <cldst train flags>", file=sys.stderr)
        return 2
    records: list[dict] = []
    masking.Masking.update = recording(records)
    try:
        cli.main(["train", *argv[2:]])
    finally:
        Path(argv[0]).write_text(json.dumps(records) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
