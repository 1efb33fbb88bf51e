"""Measurement 1: training images/s of
  a. plain dense training of the net on device-resident data (the practical limit of this loop),
  b. cldst with DST + isolation (task 1, so task 0's weights are owned and frozen),
  c. the reference's input path: a DataLoader with per-sample crop/flip/normalise feeding the same net.

b per (density, growth, update_frequency) = batch / (DST step + one prune-and-regrow / update_frequency):
the step (forward, backward, gradient freeze, optimizer, isolation rewrite) does not depend on the growth
criterion or the update frequency, so it is timed once per density (interleaved with a), and the update
once per (density, growth), then amortised.

    python -m benchmarks.throughput [--quick] [--device auto|cpu|cuda] [--no-append]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import common
from benchmarks.common import GROWTHS, Batch, Record
from cldst.data import Benchmark, task_indices


class PerSampleDataset(torch.utils.data.Dataset):
    """The reference's input path: one image at a time, crop with padding, flip, to float, normalise.
    torchvision's transforms on PIL images where torchvision is importable, the same ops in torch otherwise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                 padding: int):
        self.images, self.labels, self.padding = images, labels, padding
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        try:
            from torchvision import transforms
        except ImportError:
            self.transform = None
        else:
            self.transform = transforms.Compose([
                transforms.RandomCrop(images.shape[1], padding=padding), transforms.RandomHorizontalFlip(),
                transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.transform is not None:
            from PIL import Image

            return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1)  # (C, H, W) uint8
        _, h, w = x.shape
        p = self.padding
        top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
        x = F.pad(x, (p, p, p, p))[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return (x.float() / 255.0 - self.mean) / self.std, int(self.labels[i])


def loader_batches(bench: Benchmark, task: int, classes_per_task: int, batch_size: int, device: torch.device,
                   workers: int) -> Iterator[Batch]:
    idx = task_indices(bench.train_y, task, classes_per_task)
    dataset = PerSampleDataset(bench.train_x[idx], bench.train_y[idx], bench.mean, bench.std, bench.crop_padding)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True, memory_format=memory_format), y.to(device, non_blocking=True)


def measure(net: str, batch: int, device: torch.device, bench: Benchmark, args: argparse.Namespace
            ) -> tuple[Record, list[Record]]:
    dense = common.make_trainer(net, batch, device, bench)
    dst = {d: common.make_trainer(net, batch, device, bench, density=d) for d in args.densities}
    fns = {"dense": dense.step, **{f"dst {d}": t.step for d, t in dst.items()}}
    step = common.interleaved(device, fns, args.warmup, args.steps, args.chunk)
    update: dict[tuple[float, str], float] = {}
    for d, trainer in dst.items():
        for growth in args.growths:
            trainer.masking.growth = growth  # read only by update(): the same as a task started with it
            trainer.update()  # warm-up
            update[d, growth] = common.time_synced(device, trainer.update, args.update_repeats)
    del dense, dst, fns
    batches = loader_batches(bench, 1, 10, batch, device, args.loader_workers)
    reference = common.make_trainer(net, batch, device, bench, batches=batches)
    c_step = common.interleaved(device, {"c": reference.step}, args.warmup, args.steps, args.chunk)["c"]
    batches.close()  # shuts the DataLoader's workers down
    a_ips, c_ips = batch / step["dense"], batch / c_step
    base = {"net": net, "batch": batch, "a dense img/s": a_ips, "c DataLoader img/s": c_ips, "a/c": a_ips / c_ips,
            "dense step ms": 1e3 * step["dense"]}
    rows = []
    for (d, growth), seconds in update.items():
        row: Record = {"net": net, "batch": batch, "density": d, "growth": growth,
                       "DST step ms": 1e3 * step[f"dst {d}"], "update ms": 1e3 * seconds}
        for uf in args.ufs:
            b_time = step[f"dst {d}"] + seconds / uf
            row[f"b img/s uf{uf}"] = batch / b_time
            row[f"b/a uf{uf}"] = b_time / step["dense"]
        row[f"b/c uf{args.ufs[0]}"] = row[f"b img/s uf{args.ufs[0]}"] / c_ips
        rows.append(row)
    return base, rows


def main(argv: list[str] | None = None) -> dict[str, list[Record]]:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["resnet18", "mobilenetv2"])
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default 64 128 (--quick: 64)")
    p.add_argument("--densities", nargs="+", type=float, default=None, help="default 0.2 0.1 0.05 (--quick: 0.2)")
    p.add_argument("--ufs", nargs="+", type=int, default=[100, 400], help="update frequencies")
    p.add_argument("--growths", nargs="+", default=list(GROWTHS), choices=GROWTHS)
    p.add_argument("--chunk", type=int, default=None, help="steps per timed chunk (default: 1 on CPU, 20 on CUDA)")
    p.add_argument("--update-repeats", type=int, default=None)
    p.add_argument("--loader-workers", type=int, default=2)
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    args.batches = args.batches or ([64] if args.quick else [64, 128])
    args.densities = args.densities or ([0.2] if args.quick else [0.2, 0.1, 0.05])
    args.warmup = args.warmup if args.warmup is not None else common.by_mode(args, device, 2, 3, 20)
    args.steps = args.steps or common.by_mode(args, device, 3, 12, 200)
    args.chunk = args.chunk or common.by_mode(args, device, 1, 1, 20)
    args.update_repeats = args.update_repeats or common.by_mode(args, device, 1, 3, 10)
    bench = common.synthetic_cifar100(train_per_class=512, test_per_class=1)  # task 1: 5120 images
    bases, rows = [], []
    for net in args.nets:
        for batch in args.batches:
            base, dst_rows = measure(net, batch, device, bench, args)
            bases.append(base)
            rows += dst_rows
    ufs = ", ".join(str(u) for u in args.ufs)
    path = "torchvision transforms on PIL images" if PerSampleDataset(
        bench.train_x[:1], bench.train_y[:1], bench.mean, bench.std, 4).transform else "per-sample torch ops"
    notes = [f"steps: {args.warmup} warm-up + {args.steps} timed per variant, in chunks of {args.chunk} taken in turn "
             f"(the fastest chunk); the fastest of {args.update_repeats} timed prune-and-regrow per "
             "(density, growth) after 1 warm-up",
             "data: synthetic CIFAR-shaped uint8, task 1 of the 10-task CIFAR-100 split (5,120 images), "
             "crop 4 + flip + normalise; Adam; task 0's mask is owned, so isolation is live",
             f"b = batch / (DST step + update / uf) for uf in {ufs}; b/a = time per image of b over a "
             "(overhead, target <= 1.10 at uf 100); b/c = images/s of b over c (gain, target on a GPU >= 5)",
             f"c: DataLoader, {args.loader_workers} workers, {path}, feeding the dense step of the same net "
             "(so b/c is conservative: c pays no DST cost)"]
    common.report("benchmarks.throughput", argv, args, device, "1. Throughput",
                  [common.table(bases), common.table(rows)], notes)
    return {"baselines": bases, "dst": rows}


if __name__ == "__main__":
    main()
