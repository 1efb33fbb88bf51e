"""The DST engine's invariants: exact densities, the ERK formula, exact prune/grow, optimizer state, bits."""

import math

import numpy as np
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
    pack_bits,
    prune,
    set_prune,
    unpack_bits,
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


def make_engine(growth="random", prune="magnitude", sparse_init="uniform", density=0.2, seed=0, net="mlp"):
    torch.manual_seed(seed)
    model = build_model(net, 1 if net == "mlp" else 3, 8 if net == "mlp" else 32, 10)
    masking = Masking(model, sparse_init, True, 2)
    masking.start_task(0, torch.Generator().manual_seed(1), density, prune, growth)
    return model, masking


def train_steps(model, masking, optimizer, steps, task=0, x=None):
    for _ in range(steps):
        x_batch = torch.randn(16, 1, 8, 8) if x is None else x
        y = torch.randint(0, 2, (len(x_batch),))
        loss = torch.nn.functional.cross_entropy(model(x_batch)[:, 2 * task:2 * task + 2], y)
        optimizer.zero_grad()
        loss.backward()
        masking.after_backward()
        optimizer.step()
        masking.after_step(optimizer)


@pytest.mark.parametrize("sparse_init", ["uniform", "ERK"])
def test_start_task_draws_exact_counts_and_zeroes_the_rest(sparse_init):
    model, masking = make_engine(sparse_init=sparse_init)
    for name, p in masking.params.items():
        assert int(masking.mask[name].sum()) == masking.counts[name]
        assert torch.all(p[~masking.mask[name]] == 0)


@pytest.mark.parametrize("growth", list(GROWTH_SCORES))
@pytest.mark.parametrize("prune", PRUNES)
def test_update_keeps_counts_and_keeps_optimizer_state(growth, prune):
    model, masking = make_engine(growth=growth, prune=prune)
    generator = torch.Generator().manual_seed(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 3)
    before = {n: m.clone() for n, m in masking.mask.items()}
    values = {n: p.detach().clone() for n, p in masking.params.items()}
    moments = {n: optimizer.state[p]["exp_avg"].clone() for n, p in masking.params.items()}
    counts = dict(masking.counts)
    # weights scoring exactly 0 (here: the head rows of classes not trained get no gradient under Taylor_FO)
    at_zero = {n: before[n] & ((p.grad * p if prune == "Taylor_FO" else p) == 0) for n, p in masking.params.items()}
    masking.update(0.3, optimizer, generator)
    for name, p in masking.params.items():
        new, old = masking.mask[name], before[name]
        dropped, grown = old & ~new, new & ~old
        k = math.ceil(0.3 * counts[name])
        assert 0 < int(dropped.sum()) == int(grown.sum()) <= max(k, int(at_zero[name].sum())), name
        assert int(new.sum()) == masking.counts[name] == counts[name]
        assert torch.all(p[grown] == 0), "newly grown weights start at zero"
        assert torch.all(p[dropped] == 0)
        assert torch.equal(p[old & new], values[name][old & new]), "kept (and dropped-then-regrown) keep values"
        # Adam's state is never reset: inactive weights kept gathering moments, and keep them when regrown
        assert torch.equal(optimizer.state[p]["exp_avg"], moments[name])
        # (unfired growth draws among never-fired weights at random: in the head, perhaps only rows of classes not
        # trained yet, whose gradient and so moments are 0)
        assert torch.any(moments[name][grown] != 0) or growth == "unfired"


# Every net at the paper's densities and the highest death rates, with the layers ERK makes dense or
# near-dense: each layer's count stays exactly what the init drew, after every update. Each setting runs one
# prune x growth pair (a CPU is slow at updates of an 11-15M-weight net), so each net still meets all 12 pairs
# across its 12 settings.
CRITERIA = [(prune, growth) for prune in PRUNES for growth in GROWTH_SCORES]
SETTINGS = [(init, density, rate) for init in ("uniform", "ERK") for density in (0.05, 0.1, 0.2) for rate in (0.5, 1.0)]


# The quick tier runs mobilenetv2's 12 settings (every pair); resnet18's and vgg16's take minutes more on 2 cores.
@pytest.mark.parametrize("net", [pytest.param("resnet18", marks=pytest.mark.slow), "mobilenetv2",
                                 pytest.param("vgg16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_exact_layer_counts_through_updates_of_every_criterion(net, setting):
    sparse_init, density, death_rate = SETTINGS[setting]
    model, masking = make_engine(sparse_init=sparse_init, density=density, net=net)
    drawn = {name: int(mask.sum()) for name, mask in masking.mask.items()}
    numel = {name: math.prod(shape) for name, shape in masking.shapes.items()}
    if sparse_init == "uniform":
        assert drawn == {name: round(density * n) for name, n in numel.items()}
    else:
        assert sum(drawn.values()) == round(density * sum(numel.values()))
    generator = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    optimizer.step()
    masking.after_step(optimizer)
    masking.prune, masking.growth = CRITERIA[setting]
    for _ in range(2):
        masking.update(death_rate, optimizer, generator)
        for name, mask in masking.mask.items():
            assert int(mask.sum()) == drawn[name], f"{CRITERIA[setting]}: {name}"
    dense = [name for name, count in drawn.items() if count == numel[name]]
    assert bool(dense) == (sparse_init == "ERK" and (density, net) != (0.05, "mobilenetv2")), "dense layers covered"


def test_a_regrown_weight_steps_about_lr():
    """Adam keeps the moments a weight gathers while inactive, so its first steps after regrowth are the usual
    Adam step (about lr), not the several-times-lr steps of moments reset without their step count."""
    model, masking = make_engine(growth="gradient", density=0.2)
    name, p = next(iter(masking.params.items()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(64, 1, 8, 8)
    train_steps(model, masking, optimizer, 20, x=x)
    generator = torch.Generator().manual_seed(4)
    before = masking.mask[name].clone()
    masking.update(0.5, optimizer, generator)
    grown = masking.mask[name] & ~before
    assert grown.sum() > 0
    for _ in range(3):
        start = p.detach().clone()
        train_steps(model, masking, optimizer, 1, x=x)
        step = (p.detach() - start)[grown].abs()
        assert step.max() <= 1e-2 * 1.05


def test_free_weights_start_task_1_at_exactly_zero():
    model, masking = make_engine(density=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 2)
    masking.end_task()
    masking.start_task(1, torch.Generator().manual_seed(5), 0.3, "magnitude", "random")
    for name, p in masking.params.items():
        free = masking.mask[name] & ~masking.owned[name]
        assert free.any() and torch.all(p[free] == 0), name
        assert torch.all(p[~masking.owned[name]] == 0), "never-trained rows are zero too"
        owned = masking.mask[name] & masking.owned[name]
        assert torch.any(p[owned] != 0), "shared weights carry their values"


def test_sgd_momentum_buffer_is_masked_after_every_step():
    model, masking = make_engine(density=0.3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    train_steps(model, masking, optimizer, 2)
    for name, p in masking.params.items():
        assert torch.all(optimizer.state[p]["momentum_buffer"][~masking.mask[name]] == 0)


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000])
def test_packed_bits_round_trip(numel):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) < 0.5
    packed = pack_bits(mask.view(-1, 1))
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel / 8)
    assert torch.equal(unpack_bits(packed, (numel, 1)), mask.view(-1, 1))
    assert packed.tolist() == np.packbits(mask.numpy()).tolist()


def test_magnitude_prunes_the_smallest_active_weights():
    model, masking = make_engine(prune="magnitude")
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 2)
    name, p = next(iter(masking.params.items()))
    old = masking.mask[name].clone()
    kept_values = p[old].abs().sort().values
    masking.update(0.25, optimizer, generator)
    k = math.ceil(0.25 * int(old.sum()))
    removed = p.detach()[old & ~masking.mask[name]].abs()  # (a pruned weight may be regrown: then it stays)
    assert len(removed) > 0 and removed.max() <= kept_values[k - 1]


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
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 1)
    fired_before = {n: f.clone() for n, f in masking.fired.items()}
    old = {n: m.clone() for n, m in masking.mask.items()}
    masking.update(0.5, optimizer, generator)
    for name in masking.params:
        grown = masking.mask[name] & ~old[name]
        assert grown.any(), f"{name}: half the active weights were pruned, so never-fired ones must have grown"
        assert not torch.any(grown & fired_before[name]), "plenty of unfired weights: none fired is regrown"


def test_every_net_is_fully_maskable_or_head_bias():
    for net, shape in [("resnet18", (3, 32)), ("mobilenetv2", (3, 32)), ("vgg16", (3, 32)), ("lenet5", (1, 28))]:
        model = build_model(net, shape[0], shape[1], 10)
        params = dict(model.named_parameters())
        assert set(params) - set(maskable_parameters(model)) <= {"classifier.bias"}


class Head(torch.nn.Module):
    """One 10 x 40 classifier without bias: 400 maskable weights, 200 active at density 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(40, 10, bias=False)


def head_with_zeros(zeros: int, criterion: str) -> tuple[Masking, torch.optim.Optimizer, torch.Tensor]:
    """200 active weights, `zeros` of them scoring exactly 0 under `criterion` (value 0 for magnitude and SET,
    gradient 0 for Taylor_FO). The inactive weights' gradients are the largest, so gradient growth regrows
    none of the weights this update pruned, and every removal shows in the mask."""
    model = Head()
    masking = Masking(model, "uniform", True, 2)
    masking.start_task(0, torch.Generator().manual_seed(0), 0.5, criterion, "gradient")
    weight, mask = masking.params["classifier.weight"], masking.mask["classifier.weight"]
    active = mask.flatten().nonzero().flatten()
    assert len(active) == 200
    with torch.no_grad():
        weight.copy_(torch.where(mask, torch.linspace(0.1, 1.0, 400).view(10, 40), 0.0))
    weight.grad = torch.where(mask, 1.0, 10.0)  # active: Taylor_FO scores w^2; inactive: growth's first picks
    zeroed = active[torch.randperm(200, generator=torch.Generator().manual_seed(1))[:zeros]]
    with torch.no_grad():
        (weight.grad if criterion == "Taylor_FO" else weight).view(-1)[zeroed] = 0.0
    return masking, torch.optim.Adam(model.parameters()), mask.clone()


@pytest.mark.parametrize("criterion", ["magnitude", "Taylor_FO", "SET"])
@pytest.mark.parametrize(("zeros", "removed"), [(120, 120), (100, 100), (30, 100)])
def test_pruning_at_exact_zeros_is_the_references(criterion, zeros, removed):
    """The reference's cases: 200 active, death rate 0.5 (k = 100). 120 at zero: all 120 leave, 120 regrow;
    30 at zero: 100 leave (the 30 first), 100 regrow. The layer keeps its 200."""
    masking, optimizer, before = head_with_zeros(zeros, criterion)
    weight = masking.params["classifier.weight"]
    scores = weight.grad * weight if criterion == "Taylor_FO" else weight
    at_zero = before & (scores == 0)
    drop, count = prune(criterion, weight, weight.grad, before, 100)
    assert int(drop.sum()) == count == removed and bool(torch.all(drop[at_zero]))
    masking.update(0.5, optimizer, torch.Generator().manual_seed(2))
    after = masking.mask["classifier.weight"]
    assert int((before & ~after).sum()) == int((after & ~before).sum()) == removed
    assert int(after.sum()) == 200


def test_erk_gives_the_leftover_weights_to_the_largest_remainders():
    """Shapes 3x3, 2x5, 4x1 at density 0.5: raw ERK 6/9, 7/10, 5/4, scale 11.5 / (6 + 7 + 5), so the ideal counts
    are 3.83, 4.47 and 3.19. The floors (3, 4, 3) are 2 short of round(11.5) = 12: the two largest remainders
    (3.83, then 4.47) get one each."""
    assert layer_counts({"a": (3, 3), "b": (2, 5), "c": (4, 1)}, 0.5, "ERK") == {"a": 4, "b": 5, "c": 3}
    # 3x3 and 2x5 alone: ideal 6 and 7 x 9.5 / 13 = 4.38 and 5.12, one short of round(9.5) = 10: the smaller layer's
    # larger remainder takes it
    assert layer_counts({"a": (3, 3), "b": (2, 5)}, 0.5, "ERK") == {"a": 5, "b": 5}


def test_erk_raises_the_ratio_to_the_given_power():
    densities = erk_densities(SHAPES, 0.1, power=0.5)
    ratios = [d / (sum(SHAPES[n]) / math.prod(SHAPES[n])) ** 0.5 for n, d in densities.items()]
    assert max(densities.values()) < 1 and max(ratios) == pytest.approx(min(ratios))


def test_erk_at_full_density_is_dense_everywhere():
    assert erk_densities(SHAPES, 1.0) == {name: 1.0 for name in SHAPES}
    # one 2x9 layer: raw 11/18 times scale 18/11 rounds to just above 1, so the layer turns dense and no
    # sparse layer is left; its density is still 1
    assert erk_densities({"only": (2, 9)}, 1.0) == {"only": 1.0}
    assert layer_counts(SHAPES, 1.0, "ERK") == {name: math.prod(shape) for name, shape in SHAPES.items()}


@pytest.mark.parametrize(("step", "total_steps", "rate"), [
    (0, 0, 0.5), (0, 1, 0.5), (1, 1, 0.005), (150, 100, 0.005),
    (25, 100, 0.005 + 0.5 * 0.495 * (1 + math.sqrt(0.5)))])  # a quarter of the way: cos(pi / 4)
def test_death_rate_schedule_at_its_edges(step, total_steps, rate):
    """A task of no steps stays at the start; steps past the end stay at the floor."""
    assert death_rate_at(step, total_steps, 0.5) == pytest.approx(rate)


def test_taylor_fo_prunes_the_smallest_first_order_terms_whatever_their_sign():
    """|w x g| of 1, 2, 3 and 0.4: the two smallest are weights 3 and 0; magnitude alone would take 0 and 1."""
    weight, grad = torch.tensor([1.0, -2.0, 3.0, -4.0]), torch.tensor([1.0, 1.0, -1.0, 0.1])
    everything = torch.ones(4, dtype=torch.bool)
    drop, removed = prune("Taylor_FO", weight, grad, everything, 2)
    assert drop.tolist() == [True, False, False, True] and removed == 2
    assert prune("magnitude", weight, grad, everything, 2)[0].tolist() == [True, True, False, False]
    assert prune("Taylor_FO", weight, None, everything, 2)[0].tolist() == [True, True, False, False]  # no gradient


@pytest.mark.parametrize(("k", "dropped"), [
    (1, [True, False, False, False, False, False]),
    (2, [True, False, False, True, False, False]),
    (3, [True, True, False, True, False, False]),
    (5, [True, True, True, True, True, False])])
def test_set_prune_takes_the_odd_one_from_the_non_negative_side(k, dropped):
    """Weights 0, 0.2, 0.3 (non-negative, 0 included) and -0.1, -0.2, -0.3: ceil(k / 2) from the smallest
    non-negative ones, the rest from the negative ones closest to 0."""
    weight = torch.tensor([0.0, 0.2, 0.3, -0.1, -0.2, -0.3])
    assert set_prune(weight, torch.ones(6, dtype=torch.bool), k).tolist() == dropped


def test_set_pruning_through_prune_splits_the_signs():
    weight = torch.tensor([0.1, 0.2, 0.3, -0.1, -0.2, -0.3])
    drop, removed = prune("SET", weight, None, torch.ones(6, dtype=torch.bool), 2)
    assert drop.tolist() == [True, False, False, True, False, False] and removed == 2


def test_set_with_exactly_k_active_zeros_still_splits_the_signs():
    """Zeros leave all at once only when they outnumber k; with exactly k of them they are the first of the
    non-negative half (docs/experiments/differences.md, "SET as the SET paper defines it"): k = 2 takes one zero
    and the negative weight closest to 0."""
    weight = torch.tensor([0.0, 0.0, 0.2, -0.1, -0.2, -0.3])
    drop, removed = prune("SET", weight, None, torch.ones(6, dtype=torch.bool), 2)
    assert removed == 2 and int(drop[:2].sum()) == 1 and drop[2:].tolist() == [False, True, False, False]


def test_set_prune_takes_the_rest_from_the_other_side_when_one_runs_short():
    weight, mask = torch.tensor([0.1, -0.1, -0.2, -0.3, -0.4]), torch.ones(5, dtype=torch.bool)
    assert set_prune(weight, mask, 4).tolist() == [True, True, True, True, False]  # one non-negative, three negative
    assert set_prune(-weight, mask, 4).tolist() == [True, True, True, True, False]  # one negative, three positive


def test_momentum_growth_reads_adams_normalised_moment_then_sgds_buffer_then_the_gradient():
    weight, grad, generator = torch.zeros(3), torch.tensor([0.5, -4.0, 1.0]), torch.Generator()
    fired = torch.zeros(3, dtype=torch.bool)
    score = GROWTH_SCORES["momentum"]
    adam = {"exp_avg": torch.tensor([0.1, -0.2, 0.3]), "exp_avg_sq": torch.tensor([1e-4, 0.04, 0.36])}
    torch.testing.assert_close(score(weight, grad, adam, generator, fired), torch.tensor([10.0, 1.0, 0.5]))
    # a second moment as small as the epsilon: 1e-8 / (sqrt(1e-16) + 1e-8)
    tiny = {"exp_avg": torch.tensor([1e-8]), "exp_avg_sq": torch.tensor([1e-16])}
    torch.testing.assert_close(score(torch.zeros(1), None, tiny, generator, fired[:1]), torch.tensor([0.5]))
    sgd = {"momentum_buffer": torch.tensor([-3.0, 1.0, 2.0])}
    assert score(weight, grad, sgd, generator, fired).tolist() == [3.0, 1.0, 2.0]
    for no_moment in ({}, {"momentum_buffer": None}):
        assert score(weight, grad, no_moment, generator, fired).tolist() == [0.5, 4.0, 1.0]
    assert score(weight, None, {}, generator, fired).tolist() == [0.0, 0.0, 0.0]


def test_gradient_growth_switches_on_the_largest_gradients_and_the_update_records_them():
    """200 of 400 weights active, death rate 0.3 (k = 60); the 60 inactive weights with the largest |gradient|
    (of either sign) grow, and `record` holds exactly the removed and the grown."""
    masking, optimizer, before = head_with_zeros(0, "magnitude")
    weight = masking.params["classifier.weight"]
    inactive = (~before).flatten().nonzero().flatten()
    largest = inactive[torch.randperm(200, generator=torch.Generator().manual_seed(3))[:60]]
    grad = torch.where(before, 1.0, 0.5).flatten()
    grad[largest] = torch.linspace(2.0, 20.0, 60) * torch.tensor([1.0, -1.0]).repeat(30)
    weight.grad = grad.view(10, 40)
    record = {}
    masking.update(0.3, optimizer, torch.Generator().manual_seed(4), record)
    removed, grown = record["classifier.weight"]
    assert sorted(grown.flatten().nonzero().flatten().tolist()) == sorted(largest.tolist())
    assert torch.equal(removed, before & ~masking.mask["classifier.weight"]) and int(removed.sum()) == 60


@pytest.mark.parametrize(("death_rate", "moved"), [(0.0, None), (0.001, 1), (0.3, 60)])
def test_the_smallest_death_rates_move_ceil_of_rate_x_count(death_rate, moved):
    """Even at a rate far below one weight (0.2 of one), one weight moves; at 0, the layer is left alone."""
    masking, optimizer, before = head_with_zeros(0, "magnitude")
    record = {}
    masking.update(death_rate, optimizer, torch.Generator().manual_seed(4), record)
    if moved is None:
        assert record == {} and torch.equal(masking.mask["classifier.weight"], before)
    else:
        assert [int(part.sum()) for part in record["classifier.weight"]] == [moved, moved]


def test_task_0_trains_the_models_own_init_inside_its_mask():
    torch.manual_seed(0)
    model = build_model("mlp", 1, 8, 10)
    init = {name: p.detach().clone() for name, p in maskable_parameters(model).items()}
    masking = Masking(model, "uniform", True, 2)
    masking.start_task(0, torch.Generator().manual_seed(1), 0.3, "magnitude", "random")
    for name, p in masking.params.items():
        inside = masking.mask[name]
        assert torch.equal(p[inside], init[name][inside]) and torch.all(p[inside] != 0) and torch.all(p[~inside] == 0)


def test_end_task_reports_density_capacity_reuse_and_fired_weights():
    """Two tasks of 200 of the 400 head weights each: the second's overlap with the first is its reused share, the
    union is the capacity used, and the fired weights are those of the last task's mask and its regrowth."""
    model = Head()
    masking = Masking(model, "uniform", True, 2)
    masking.start_task(0, torch.Generator().manual_seed(0), 0.5, "magnitude", "random")
    first = masking.mask["classifier.weight"].clone()
    assert masking.end_task() == {"task_density": 0.5, "capacity_used": 0.5, "reused_fraction": 0.0,
                                  "fired_fraction": 0.5}
    masking.start_task(1, torch.Generator().manual_seed(1), 0.5, "magnitude", "random")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    masking.update(0.5, optimizer, torch.Generator().manual_seed(2))
    second, fired = masking.mask["classifier.weight"].clone(), masking.fired["classifier.weight"].clone()
    assert int(fired.sum()) > 200  # the update grew 100 never-active weights of this task
    stats = masking.end_task()
    assert stats == {"task_density": 0.5, "capacity_used": int((first | second).sum()) / 400,
                     "reused_fraction": int((first & second).sum()) / 200, "fired_fraction": int(fired.sum()) / 400}
    assert 0 < stats["reused_fraction"] < 1 and torch.equal(masking.task_mask(1)["classifier.weight"], second)


def test_a_snapshot_restores_the_subnetwork_its_counts_and_the_head_bias():
    model, masking = make_engine(density=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, masking, optimizer, 2)
    snap = masking.snapshot()
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    masks = {name: mask.clone() for name, mask in masking.mask.items()}
    fired = {name: f.clone() for name, f in masking.fired.items()}  # an update grows fired masks in place
    counts = dict(masking.counts)
    masking.update(0.5, optimizer, torch.Generator().manual_seed(2))
    train_steps(model, masking, optimizer, 2)
    masking.restore(snap)
    for name, p in model.named_parameters():
        assert torch.equal(p, saved[name]), name
    assert all(torch.equal(masking.mask[n], masks[n]) and torch.equal(masking.fired[n], fired[n]) for n in masks)
    assert masking.counts == counts
    train_steps(model, masking, optimizer, 1)  # training goes on inside the restored mask
    assert all(torch.all(p[~masks[n]] == 0) for n, p in masking.params.items())


def test_a_task_moves_its_own_head_bias_entries_and_no_others():
    """The head bias is shared by the tasks, classes_per_task entries each. A loss over every output pushes every
    entry; with isolation task 1 moves exactly its entries (2 and 3), neither task 0's nor the later tasks'."""
    model, masking = make_engine(density=0.3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    masking.end_task()
    masking.start_task(1, torch.Generator().manual_seed(2), 0.3, "magnitude", "random")
    before = masking.head_bias.detach().clone()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(2, 4, (16,)))
        optimizer.zero_grad()
        loss.backward()
        masking.after_backward()
        optimizer.step()
        masking.after_step(optimizer)
    assert (masking.head_bias.detach() != before).tolist() == [False] * 2 + [True] * 2 + [False] * 6


def test_a_layer_with_no_active_weight_leaves_the_next_layers_update_alone():
    """Uniform density 0.2 gives the 1x1 layer no weight and the 10x1 layer 2: the update skips the first and
    moves one of the second's (the smaller active weight out, the inactive weight of the largest gradient in)."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 10, bias=False))
    masking = Masking(model, "uniform", True, 1)
    masking.start_task(0, torch.Generator().manual_seed(0), 0.2, "magnitude", "gradient")
    assert masking.counts == {"0.weight": 0, "1.weight": 2}
    weight, mask = masking.params["1.weight"], masking.mask["1.weight"]
    before = mask.clone()
    with torch.no_grad():
        weight.copy_(torch.where(mask, torch.arange(1.0, 11.0).view(10, 1), 0.0))
    weight.grad = torch.where(mask, 0.0, torch.arange(1.0, 11.0).view(10, 1))
    masking.params["0.weight"].grad = torch.zeros(1, 1)
    masking.update(0.5, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(1))
    after = masking.mask["1.weight"].view(-1)
    assert int(after.sum()) == 2 and int((before.view(-1) & ~after).sum()) == 1
    assert after[int(torch.where(~before.view(-1))[0].max())]  # in: the inactive weight of the largest gradient


def test_the_reuse_of_a_task_of_one_weight_is_whole():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))  # 2 weights, 1 active at density 0.5
    masking = Masking(model, "uniform", True, 1)
    masking.start_task(0, torch.Generator().manual_seed(0), 0.5, "magnitude", "random")
    masking.end_task()
    masking.start_task(1, torch.Generator().manual_seed(0), 0.5, "magnitude", "random")
    masking.mask["0.weight"] = masking.owned["0.weight"].clone()  # task 1 takes task 0's weight
    assert masking.end_task()["reused_fraction"] == 1.0


def test_a_parameter_that_is_neither_maskable_nor_the_head_bias_is_refused():
    """Hidden biases: no task could own part of one. The message names the first three."""
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(4)], torch.nn.Linear(4, 2, bias=False))
    with pytest.raises(ValueError) as refused:
        Masking(model, "uniform", True, 2)
    assert str(refused.value) == ("cannot isolate tasks: parameters ['0.bias', '1.bias', '2.bias'] are neither "
                                  "maskable nor the head bias")
