"""The DST engine's invariants: exact densities, the ERK formula, exact and disjoint prune/grow."""

import math

import pytest
import torch

from cldst.config import PRUNES
from cldst.masking import (
    GROWTH_SCORES,
    Masking,
    death_rate_at,
    erk_densities,
    layer_counts,
    maskable_parameters,
    set_prune,
)
from cldst.models import build_model

SHAPES = {"conv1": (16, 3, 3, 3), "conv2": (32, 16, 3, 3), "fc": (64, 512), "head": (10, 64)}


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5])
def test_uniform_counts_are_exact_per_layer(density):
    counts = layer_counts(SHAPES, density, "uniform")
    for name, shape in SHAPES.items():
        assert counts[name] == round(density * math.prod(shape))


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_erk_total_is_exact_and_layers_follow_the_formula(density):
    total = sum(math.prod(s) for s in SHAPES.values())
    counts = layer_counts(SHAPES, density, "ERK")
    assert sum(counts.values()) == round(density * total)
    densities = erk_densities(SHAPES, density)
    sparse = {n: d for n, d in densities.items() if d < 1.0}
    # Among non-dense layers, density / (sum(shape)/prod(shape)) is one constant (the ERK scale).
    ratios = [d / (sum(SHAPES[n]) / math.prod(SHAPES[n])) for n, d in sparse.items()]
    assert max(ratios) == pytest.approx(min(ratios))
    for name, d in densities.items():
        assert 0 < d <= 1
        assert abs(counts[name] - d * math.prod(SHAPES[name])) < 1.0 + 1e-9


def test_erk_makes_small_layers_dense_and_resolves_the_rest():
    densities = erk_densities(SHAPES, 0.5)
    assert densities["conv1"] == 1.0  # 3x3x3 inputs: the raw ERK density exceeds 1
    kept = sum(d * math.prod(SHAPES[n]) for n, d in densities.items())
    assert kept == pytest.approx(0.5 * sum(math.prod(s) for s in SHAPES.values()))


def test_death_rate_decays_by_cosine_to_the_floor():
    assert death_rate_at(0, 100, 0.5) == pytest.approx(0.5)
    assert death_rate_at(50, 100, 0.5) == pytest.approx((0.5 + 0.005) / 2)
    assert death_rate_at(100, 100, 0.5) == pytest.approx(0.005)


def make_engine(growth="random", prune="magnitude", sparse_init="uniform", density=0.2, seed=0):
    torch.manual_seed(seed)
    model = build_model("mlp", 1, 8, 10)
    masking = Masking(model, sparse_init, density, prune, growth, 0.5, True, 2)
    return model, masking


def train_steps(model, masking, optimizer, steps, task=0):
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
        loss = torch.nn.functional.cross_entropy(model(x)[:, 2 * task:2 * task + 2], y)
        optimizer.zero_grad()
        loss.backward()
        masking.after_backward()
        optimizer.step()
        masking.after_step()


@pytest.mark.parametrize("sparse_init", ["uniform", "ERK"])
def test_start_task_draws_exact_counts_and_zeroes_the_rest(sparse_init):
    model, masking = make_engine(sparse_init=sparse_init)
    masking.start_task(0, torch.Generator().manual_seed(1))
    for name, p in masking.params.items():
        assert int(masking.mask[name].sum()) == masking.counts[name]
        assert torch.all(p[~masking.mask[name]] == 0)


@pytest.mark.parametrize("growth", list(GROWTH_SCORES))
@pytest.mark.parametrize("prune", PRUNES)
def test_update_keeps_counts_drop_and_grow_disjoint_regrown_zero(growth, prune):
    model, masking = make_engine(growth=growth, prune=prune)
    generator = torch.Generator().manual_seed(1)
    masking.start_task(0, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 3)
    before = {n: m.clone() for n, m in masking.mask.items()}
    counts = dict(masking.counts)
    masking.update(0.3, optimizer, generator)
    for name, p in masking.params.items():
        new, old = masking.mask[name], before[name]
        dropped, grown = old & ~new, new & ~old
        k = math.ceil(0.3 * counts[name])
        assert int(dropped.sum()) == k, name
        assert int(grown.sum()) == min(k, p.numel() - counts[name]), name
        assert int(new.sum()) == masking.counts[name] == counts[name]
        assert not torch.any(dropped & grown)
        assert torch.all(p[grown] == 0), "regrown free weights start at zero"
        assert torch.all(p[dropped] == 0)
        state = optimizer.state[p]
        assert torch.all(state["exp_avg"][grown] == 0) and torch.all(state["exp_avg_sq"][grown] == 0)


def test_magnitude_prunes_the_smallest_active_weights():
    model, masking = make_engine(prune="magnitude")
    generator = torch.Generator().manual_seed(1)
    masking.start_task(0, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 2)
    name, p = next(iter(masking.params.items()))
    old = masking.mask[name].clone()
    kept_values = p[old].abs().sort().values
    masking.update(0.25, optimizer, generator)
    k = math.ceil(0.25 * int(old.sum()))
    survivors = p.detach()[old & masking.mask[name]].abs()
    assert survivors.min() >= kept_values[k - 1]


def test_set_prune_takes_half_from_each_sign():
    weight = torch.tensor([0.1, 0.2, 0.3, -0.1, -0.2, -0.3, 0.5, -0.5])
    mask = torch.ones_like(weight, dtype=torch.bool)
    drop = set_prune(weight, mask, 4)
    assert drop.tolist() == [True, True, False, True, True, False, False, False]
    only_positive = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert int(set_prune(only_positive, torch.ones(4, dtype=torch.bool), 3).sum()) == 3


def test_unfired_growth_prefers_never_active_weights():
    model, masking = make_engine(growth="unfired", density=0.1)
    generator = torch.Generator().manual_seed(1)
    masking.start_task(0, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 1)
    fired_before = {n: f.clone() for n, f in masking.fired.items()}
    old = {n: m.clone() for n, m in masking.mask.items()}
    masking.update(0.5, optimizer, generator)
    for name in masking.params:
        grown = masking.mask[name] & ~old[name]
        assert not torch.any(grown & fired_before[name]), "plenty of unfired weights: none fired is regrown"


def test_every_net_is_fully_maskable_or_head_bias():
    for net, shape in [("resnet18", (3, 32)), ("mobilenetv2", (3, 32)), ("vgg16", (3, 32)), ("lenet5", (1, 28))]:
        model = build_model(net, shape[0], shape[1], 10)
        params = dict(model.named_parameters())
        assert set(params) - set(maskable_parameters(model)) == {"classifier.bias"}
