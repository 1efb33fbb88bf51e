"""The DST engine: sparse init (uniform, ERK), prune and grow score functions, one generic update.

Masks are boolean, one per maskable weight (ndim > 1). A task draws a fresh mask over the
whole network; weights owned by earlier tasks may fall inside it: they are used with their
real values and never change (parameter isolation). Isolation is enforced after every
optimizer step by one fused rewrite `W = W * trainable + owned_values * frozen`, so it holds
with any optimizer, momentum or weight decay (zeroed gradients alone would not guarantee it).
Finished tasks' masks are stored as packed bits (1/8 byte per weight per task).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

GrowthScore = Callable[[Tensor, Tensor | None, dict, torch.Generator, Tensor], Tensor]
FINAL_DEATH_RATE = 0.005  # the reference's cosine decay floor
BIT_PLACES = (128, 64, 32, 16, 8, 4, 2, 1)


def maskable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.ndim > 1}


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float, power: float = 1.0) -> dict[str, float]:
    """Erdos-Renyi-Kernel: layer density ~ (sum(shape) / prod(shape))^power, scaled so the kept
    total is `density` of all weights; layers that would exceed 1 become dense and the scale is
    re-solved for the rest (the reference's rule)."""
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            return {name: 1.0 for name in shapes}
        raw = {name: (sum(shapes[name]) / numel[name]) ** power for name in sparse}
        rhs = sum(density * numel[n] for n in sparse) - sum((1 - density) * numel[n] for n in dense)
        scale = rhs / sum(raw[n] * numel[n] for n in sparse)
        largest = max(raw.values())
        if largest * scale <= 1:
            return {name: 1.0 if name in dense else raw[name] * scale for name in shapes}
        dense.update(name for name in sparse if raw[name] == largest)


def layer_counts(shapes: dict[str, tuple[int, ...]], density: float, sparse_init: str) -> dict[str, int]:
    """Exact active-weight count per layer. Uniform: round(density * n) per layer. ERK: the
    ERK densities, rounded by largest remainder so the total is exactly round(density * N)."""
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    if sparse_init == "uniform":
        return {name: round(density * n) for name, n in numel.items()}
    ideal = {name: d * numel[name] for name, d in erk_densities(shapes, density).items()}
    counts = {name: min(numel[name], math.floor(x)) for name, x in ideal.items()}
    short = round(density * sum(numel.values())) - sum(counts.values())
    for name in sorted(ideal, key=lambda n: ideal[n] - math.floor(ideal[n]), reverse=True):
        if short <= 0:
            break
        if counts[name] < numel[name]:
            counts[name] += 1
            short -= 1
    return counts


def death_rate_at(step: int, total_steps: int, death_rate: float) -> float:
    """Cosine decay from `death_rate` to 0.005 over the task's steps (the reference's schedule)."""
    progress = min(step, total_steps) / max(total_steps, 1)
    return FINAL_DEATH_RATE + 0.5 * (death_rate - FINAL_DEATH_RATE) * (1 + math.cos(math.pi * progress))


# Prune scores: the lowest-scoring active weights are removed.
def magnitude_score(weight: Tensor, grad: Tensor | None) -> Tensor:
    return weight.abs()


def taylor_fo_score(weight: Tensor, grad: Tensor | None) -> Tensor:
    return (weight * grad).pow(2) if grad is not None else weight.abs()


# Growth scores: the highest-scoring inactive weights are switched on.
def random_score(weight: Tensor, grad: Tensor | None, state: dict, generator: torch.Generator,
                 fired: Tensor) -> Tensor:
    return torch.rand(weight.shape, device=weight.device, generator=generator)


def unfired_score(weight: Tensor, grad: Tensor | None, state: dict, generator: torch.Generator,
                  fired: Tensor) -> Tensor:
    # Never-fired weights outrank every fired one; ties (and the rest, if too few) at random.
    return random_score(weight, grad, state, generator, fired) + (~fired).to(weight.dtype)


def momentum_score(weight: Tensor, grad: Tensor | None, state: dict, generator: torch.Generator,
                   fired: Tensor) -> Tensor:
    if "exp_avg" in state:  # Adam: the normalised first moment, as the reference
        return (state["exp_avg"] / (state["exp_avg_sq"].sqrt() + 1e-8)).abs()
    if state.get("momentum_buffer") is not None:
        return state["momentum_buffer"].abs()
    return gradient_score(weight, grad, state, generator, fired)


def gradient_score(weight: Tensor, grad: Tensor | None, state: dict, generator: torch.Generator,
                   fired: Tensor) -> Tensor:
    return grad.abs() if grad is not None else torch.zeros_like(weight)


PRUNE_SCORES = {"magnitude": magnitude_score, "Taylor_FO": taylor_fo_score}  # SET prunes by sign: set_prune
GROWTH_SCORES: dict[str, GrowthScore] = {"random": random_score, "unfired": unfired_score, "momentum": momentum_score,
                 "gradient": gradient_score}


def lowest(score: Tensor, candidates: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly k candidates with the lowest score."""
    chosen = torch.zeros_like(candidates)
    if k > 0:
        masked = score.masked_fill(~candidates, math.inf).flatten()
        # sorted=False: only the set is used, and topk picks the set before it sorts (CPU and CUDA)
        chosen.view(-1)[torch.topk(masked, k, largest=False, sorted=False).indices] = True
    return chosen


def prune(criterion: str, weight: Tensor, grad: Tensor | None, mask: Tensor, k: int) -> tuple[Tensor, int]:
    """The active weights an update removes, and how many: k by the criterion, or, when more than k active
    weights score exactly 0, all of those. The reference keeps |score| > the score at position (inactive + k) of the
    sorted layer; inactive weights are 0, so with that many zeros its threshold is 0 and every zero goes
    (weights free in tasks >= 1 start at 0, and rows of other classes' heads never get a gradient). SET's
    score is the value itself: the reference's SET keeps only weights strictly above or below 0."""
    score = weight if criterion == "SET" else PRUNE_SCORES[criterion](weight, grad)
    at_zero = mask & (score == 0)
    zeros = int(at_zero.sum())  # a host sync per layer per update, not per step
    if zeros > k:
        return at_zero, zeros
    return (set_prune(weight, mask, k) if criterion == "SET" else lowest(score, mask, k)), k


def set_prune(weight: Tensor, mask: Tensor, k: int) -> Tensor:
    """SET: half of the k from the smallest non-negative weights, half from the negative ones
    closest to zero; if one side runs short, the other side gives the rest."""
    positive, negative = mask & (weight >= 0), mask & (weight < 0)
    n_pos, n_neg = int(positive.sum()), int(negative.sum())  # one sync per layer per update, not per step
    k_pos = min(n_pos, max(math.ceil(k / 2), k - n_neg))
    return lowest(weight, positive, k_pos) | lowest(-weight, negative, k - k_pos)


def pack_bits(mask: Tensor) -> Tensor:
    """Any-shape bool -> (ceil(n / 8),) uint8, most significant bit first (numpy.packbits' order)."""
    flat = mask.flatten()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    place = torch.tensor(BIT_PLACES, dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8).to(torch.uint8) * place).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The inverse of pack_bits: (ceil(n / 8),) uint8 -> bool of `shape`."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed[:, None] >> shifts) & 1  # (ceil(n / 8), 8)
    return bits.flatten()[: math.prod(shape)].view(shape).bool()


class Masking:
    """Masks of one run: the current task's mask, the finished tasks' masks (packed bits) and what they own.

    Per task the working set is one bool per weight each for the task's mask, its fired mask,
    what earlier tasks own, its complement (the gradient keep) and what is trainable, plus one float
    copy: the values of owned weights (`owned_values`, zero elsewhere).
    """

    def __init__(self, model: nn.Module, sparse_init: str, isolate: bool, classes_per_task: int):
        self.params = maskable_parameters(model)
        head_bias = getattr(getattr(model, "classifier", None), "bias", None)
        others = [n for n, p in model.named_parameters() if n not in self.params and p is not head_bias]
        if others:
            raise ValueError(f"cannot isolate tasks: parameters {others[:3]} are neither maskable nor the head bias")
        self.head_bias = head_bias
        self.shapes = {name: tuple(p.shape) for name, p in self.params.items()}
        self.total = sum(p.numel() for p in self.params.values())
        self.sparse_init, self.isolate, self.classes_per_task = sparse_init, isolate, classes_per_task
        self.task_masks: list[dict[str, Tensor]] = []  # packed bits, one dict per finished task
        self.owned = {name: torch.zeros_like(p, dtype=torch.bool) for name, p in self.params.items()}

    # ---- per task ------------------------------------------------------------------------
    @torch.no_grad()
    def start_task(self, task: int, generator: torch.Generator, density: float, prune: str, growth: str) -> None:
        """Draw the task's mask and freeze what earlier tasks own. Weights no earlier task owns start
        at 0 in tasks >= 1, as in the reference (its merged model is zero outside the earlier masks)."""
        self.task, self.prune, self.growth = task, prune, growth
        if task > 0:
            torch._foreach_mul_(list(self.params.values()), list(self.owned.values()))
        self.owned_values = {name: p.detach() * self.owned[name] for name, p in self.params.items()}
        if self.head_bias is not None:  # other tasks' head entries are owned; this task's are free
            self.owned_values["classifier.bias"] = self.head_bias.detach() * ~self._not_owned("classifier.bias")
        self.counts = layer_counts(self.shapes, density, self.sparse_init)
        self.mask = {}
        for name, count in self.counts.items():
            p = self.params[name]
            chosen = torch.randperm(p.numel(), device=p.device, generator=generator)[:count]
            mask = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            mask[chosen] = True
            self.mask[name] = mask.view_as(p)
        self.fired = {name: m.clone() for name, m in self.mask.items()}
        isolated = self._isolated()
        self.grad_keep = [self._not_owned(name) for name in isolated]
        self.isolated_params = list(isolated.values())
        self.momentum_buffers: list[Tensor] | None = None
        self._refresh()

    def _isolated(self) -> dict[str, Tensor]:
        """Every parameter the isolation rewrite covers: maskable weights plus the head bias."""
        isolated = dict(self.params)
        if self.head_bias is not None:
            isolated["classifier.bias"] = self.head_bias
        return isolated

    def _not_owned(self, name: str) -> Tensor:
        if name == "classifier.bias":
            keep = torch.ones_like(self.head_bias, dtype=torch.bool)
            if self.isolate:  # a task's head entries are its own; other tasks' entries never move
                keep.zero_()
                keep[self.task * self.classes_per_task:(self.task + 1) * self.classes_per_task] = True
            return keep
        return ~self.owned[name] if self.isolate else torch.ones_like(self.owned[name])

    def _in_mask(self, name: str) -> Tensor:
        return self.mask[name] if name in self.mask else torch.ones_like(self.head_bias, dtype=torch.bool)

    def _refresh(self) -> None:
        """Recompute the fused rewrite for the current mask and apply it once."""
        isolated = self._isolated()
        self.tensors = [p.data for p in isolated.values()]
        self.in_mask = [self._in_mask(name) for name in isolated]
        self.trainable = [m & keep for m, keep in zip(self.in_mask, self.grad_keep, strict=True)]
        self.frozen_values = [self.owned_values[name] for name in isolated]
        self.after_step()

    # ---- every step (fused over all tensors, no host sync) --------------------------------
    def after_backward(self) -> None:
        """Zero gradients of weights earlier tasks own (the reference's isolation, which also
        keeps their momentum, and so momentum/gradient growth scores, at zero)."""
        torch._foreach_mul_([p.grad for p in self.isolated_params], self.grad_keep)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """W = W * trainable + owned_values * in_mask: weights outside the mask are 0, frozen ones exact.
        With SGD the momentum buffers are multiplied by the mask too, as the reference does; Adam's
        moments are left alone (inactive weights keep them, and momentum growth reads them)."""
        torch._foreach_mul_(self.tensors, self.trainable)
        if self.isolate:  # owned_values is zero wherever a weight is trainable
            torch._foreach_addcmul_(self.tensors, self.frozen_values, self.in_mask)
        if optimizer is not None and isinstance(optimizer, torch.optim.SGD):
            if self.momentum_buffers is None:  # created by the first step, then updated in place
                buffers = [optimizer.state[p].get("momentum_buffer") for p in self.params.values()]
                self.momentum_buffers = None if any(b is None for b in buffers) else buffers
            if self.momentum_buffers is not None:
                torch._foreach_mul_(self.momentum_buffers, list(self.mask.values()))

    # ---- every update_frequency steps -------------------------------------------------------
    @torch.no_grad()
    def update(self, death_rate: float, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               record: dict[str, tuple[Tensor, Tensor]] | None = None) -> None:
        """Prune then regrow, per layer: k = ceil(death_rate * active) removed (all active weights at exactly
        0 instead, where they outnumber k: see `prune`), and as many switched on among the weights not kept.
        As in the reference, a weight pruned in this update may be regrown (it keeps its value), so every
        layer keeps its count, and a dense layer stays dense. Newly grown weights start at zero with
        whatever optimizer state they gathered while inactive. `record`, if given, receives each changed
        layer's (removed, regrown) boolean masks (for a step trace: cldst.trace)."""
        for name, p in self.params.items():
            mask, state = self.mask[name], optimizer.state.get(p, {})
            k = math.ceil(death_rate * self.counts[name])
            if k == 0:
                continue
            drop, removed = prune(self.prune, p, p.grad, mask, k)
            kept = mask & ~drop
            score = GROWTH_SCORES[self.growth](p, p.grad, state, generator, self.fired[name])
            grow = lowest(-score, ~kept, removed)
            self.mask[name] = kept | grow
            self.fired[name] |= grow
            if record is not None:
                record[name] = (drop, grow)
        self._refresh()

    @torch.no_grad()
    def end_task(self) -> dict[str, float]:
        """Merge (weights outside the new mask take back their earlier values), store the
        task's mask, and return its mask statistics."""
        for name, p in self.params.items():
            p.copy_(torch.where(self.mask[name], p, self.owned_values[name]))
        self.task_masks.append({name: pack_bits(m) for name, m in self.mask.items()})
        active = sum(int(m.sum()) for m in self.mask.values())
        reused = sum(int((m & self.owned[n]).sum()) for n, m in self.mask.items())
        for name, m in self.mask.items():
            self.owned[name] |= m
        return {
            "task_density": active / self.total,
            "capacity_used": sum(int(o.sum()) for o in self.owned.values()) / self.total,
            "reused_fraction": reused / max(active, 1),
            "fired_fraction": sum(int(f.sum()) for f in self.fired.values()) / self.total,
        }

    # ---- snapshots (the best epoch) and evaluation ------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Tensor]]:
        """The epoch's subnetwork, compactly: the values inside the mask, the mask and fired mask as bits."""
        snap = {"values": {n: p.detach()[self.mask[n]] for n, p in self.params.items()},
                "mask": {n: pack_bits(m) for n, m in self.mask.items()},
                "fired": {n: pack_bits(f) for n, f in self.fired.items()}}
        if self.head_bias is not None:
            snap["head_bias"] = {"classifier.bias": self.head_bias.detach().clone()}
        return snap

    @torch.no_grad()
    def restore(self, snap: dict[str, dict[str, Tensor]]) -> None:
        for name, p in self.params.items():
            self.mask[name] = unpack_bits(snap["mask"][name], p.shape)
            self.fired[name] = unpack_bits(snap["fired"][name], p.shape)
            p.zero_().masked_scatter_(self.mask[name], snap["values"][name])
        if self.head_bias is not None:
            self.head_bias.copy_(snap["head_bias"]["classifier.bias"])
        self.counts = {name: int(m.sum()) for name, m in self.mask.items()}
        self._refresh()

    def task_mask(self, task: int) -> dict[str, Tensor]:
        """Finished task `task`'s mask as bool tensors."""
        return {name: unpack_bits(bits, self.shapes[name]) for name, bits in self.task_masks[task].items()}

    @torch.no_grad()
    def load_task_masks(self, task_masks: list[dict[str, Tensor]]) -> None:
        """Resume: the finished tasks' masks (packed bits), and so what they own."""
        self.task_masks = [{n: m.to(self.params[n].device) for n, m in tm.items()} for tm in task_masks]
        for name, o in self.owned.items():
            o.zero_()
            for task in range(len(self.task_masks)):
                o |= unpack_bits(self.task_masks[task][name], self.shapes[name])

    @torch.no_grad()
    def use_task(self, task: int, merged: dict[str, Tensor]) -> None:
        """Set the network to task `task`'s subnetwork of the merged weights (for evaluation)."""
        for name, mask in self.task_mask(task).items():
            self.params[name].copy_(merged[name] * mask)
