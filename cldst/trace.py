"""A step trace of a run: one JSON line per optimizer step and per prune-and-regrow update.

`cldst train --trace FILE` writes it. It exists to compare two programs step by step (docs/parity.md,
"Lockstep"): the quantities are checksums, so two runs agree where their records agree. Records:

- `{"kind": "step", "task", "step", "loss", "lr", "layers"}` after every optimizer step (and the mask
  rewrite that follows it). `step` counts from 1 within the task.
- `{"kind": "update", "task", "step", "death_rate", "layers"}` after every prune-and-regrow update.

`layers` maps each maskable parameter's name to
`{"active", "weight_sum", "weight_abs", "state": {buffer: [sum, sum of |x|]}}`, where `state` holds the
optimizer's per-weight buffers (`momentum_buffer` for SGD, `exp_avg` and `exp_avg_sq` for Adam). An update
record's layers also hold `removed` and `regrown` (how many weights the update switched off and on) and
`removed_digest` and `regrown_digest`: `index_digest` of the flat indices of those weights. A weight pruned
and regrown in the same update counts in both. Sums are over float64 copies. Tracing costs one host sync
per step (the loss) and a pass over the weights; nothing is computed when no trace is asked for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

from cldst.masking import Masking


def index_digest(chosen: Tensor) -> str:
    """A short digest of the set of flat indices where the boolean `chosen` is True (ascending int64)."""
    indices = chosen.flatten().nonzero().flatten().to(torch.int64).cpu().numpy()
    return hashlib.sha1(indices.tobytes()).hexdigest()[:16]


def checksum(x: Tensor) -> list[float]:
    """[sum, sum of absolute values] of `x` in float64."""
    x = x.detach().double()
    return [x.sum().item(), x.abs().sum().item()]


def layer_record(weight: Tensor, mask: Tensor, state: dict) -> dict:
    weight_sum, weight_abs = checksum(weight)
    buffers = {name: checksum(value) for name, value in sorted(state.items())
               if isinstance(value, Tensor) and value.shape == weight.shape}
    return {"active": int(mask.sum()), "weight_sum": weight_sum, "weight_abs": weight_abs, "state": buffers}


class Trace:
    """Writes the trace of one run to `path` (JSON lines); its methods are `continual.Hooks`' step hooks."""

    def __init__(self, path: str | Path):
        self.file: TextIO = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def layers(self, optimizer: torch.optim.Optimizer, masking: Masking) -> dict[str, dict]:
        return {name: layer_record(p, masking.mask[name], optimizer.state.get(p, {}))
                for name, p in masking.params.items()}

    def step(self, task: int, step: int, loss: Tensor, optimizer: torch.optim.Optimizer, masking: Masking) -> None:
        self.write({"kind": "step", "task": task, "step": step, "loss": loss.item(),
                    "lr": optimizer.param_groups[0]["lr"], "layers": self.layers(optimizer, masking)})

    def update(self, task: int, step: int, death_rate: float, optimizer: torch.optim.Optimizer, masking: Masking,
               changes: dict[str, tuple[Tensor, Tensor]]) -> None:
        """`changes`: per layer, the (removed, regrown) boolean masks of this update (Masking.update's record;
        a layer the update left alone, at k = 0, is absent and recorded as removing and regrowing nothing)."""
        layers = self.layers(optimizer, masking)
        for name, record in layers.items():
            removed, regrown = changes.get(name, (torch.zeros(0, dtype=torch.bool),) * 2)
            record.update(removed=int(removed.sum()), regrown=int(regrown.sum()),
                          removed_digest=index_digest(removed), regrown_digest=index_digest(regrown))
        self.write({"kind": "update", "task": task, "step": step, "death_rate": death_rate, "layers": layers})

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def read(path: str | Path) -> list[dict]:
    """The records of a trace file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]
