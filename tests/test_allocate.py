"""Cost-aware channel allocation (issue 14): the greedy knapsack on numbers, its analytic counts against the one
MACs/params counter, MACs/params/latency budgets on real models, the recipe keys, and the closed loop's check.

Latency is real where it is measured (a tiny net calibrated through the probe); where the test is about the
allocator's choice of widths, the latency model is the real predictor fitted on constructed timings (a width off
a multiple of 8 twice as slow), so the expected widths do not depend on this machine's load. No wall clock."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from edgekd.data import DataBundle, Preprocessing, TensorSplit, build_data
from edgekd.errors import InputError
from edgekd.latency import CalibrationConfig, LatencyModel, read_layers
from edgekd.latency.calibrate import calibrate_torch
from edgekd.latency.predictor import Sample, fit_tables
from edgekd.latency.variants import to_onnx
from edgekd.models import build_model
from edgekd.models.complexity import count_complexity
from edgekd.prune.allocate import CostAllocator, LatencyGoal
from edgekd.prune.budget import CountCost, LayerShape, record_shapes
from edgekd.prune.knapsack import Goal, GroupChoice, Touch, allocate, allowed_widths, cumulative
from edgekd.recipe.schema import DataConfig, ModelSpec, PruneConfig
from edgekd.results import Artifact, LatencyBudget, LatencyStats, Profile, PruneResult
from edgekd.tasks import get_task

TASK = get_task("classification")


@pytest.fixture(scope="module")
def fmnist() -> DataBundle:
    return build_data(DataConfig(train_limit=128, eval_limit=8))


def random_images(size: int, channels: int = 3, classes: int = 5) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    split = TensorSplit(
        torch.randint(0, 256, (8, channels, size, size), dtype=torch.uint8, generator=gen),
        torch.arange(8) % classes,
    )
    return DataBundle(
        f"random{size}", split, split, classes, Preprocessing((0.5,) * channels, (0.25,) * channels)
    )


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name="resnet20"), num_classes=10, in_channels=1).eval()


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 5),
    ).eval()


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# -- the knapsack, on numbers ---------------------------------------------------------------------------------


def test_allowed_widths_keep_round_to_and_the_floor():
    assert allowed_widths(64, 4, 16) == (64, 48, 32, 16)
    assert allowed_widths(20, 3, 8) == (20, 16, 8)  # the full width need not be a multiple
    assert allowed_widths(5, 4, None) == (5, 4)
    assert allowed_widths(8, 8, 8) == (8,)  # nothing to remove


def test_removing_channels_costs_more_as_the_group_thins():
    order, lost, mass = cumulative([1.0] * 4)
    steps = [b - a for a, b in zip(lost, lost[1:], strict=False)]
    assert order == (0, 1, 2, 3) and steps == sorted(steps) and steps[0] < steps[-1]
    assert mass == (0.0, 1.0, 2.0, 3.0, 4.0)


def _two_layers(area_a: int, area_b: int) -> tuple[list[GroupChoice], tuple[LayerShape, ...]]:
    """Two 16-channel convs, each its own group, equal importance: only their cost per channel differs."""
    layers = (
        LayerShape("a", "conv", 8, 16, out_area=area_a),
        LayerShape("b", "conv", 8, 16, out_area=area_b),
    )
    groups = []
    for i, name in enumerate("ab"):
        order, lost, mass = cumulative([1.0] * 16)
        groups.append(
            GroupChoice(name, 16, allowed_widths(16, 1, None), order, lost, (Touch(i, 0, 1),), mass)
        )
    return groups, layers


def test_the_cheapest_importance_per_cost_saved_goes_first():
    groups, layers = _two_layers(100, 1)
    cost = CountCost("macs", layers)
    total = sum(cost.layer(i, s.cin, s.cout) for i, s in enumerate(layers))
    result = allocate(groups, layers, Goal(cost, 0.6 * total, 0.55 * total))
    assert (
        result.kept[0] < result.kept[1] == 16
    )  # the expensive layer gives up channels, the cheap one keeps all
    assert 0.55 * total <= result.layer_sum <= 0.6 * total
    assert 0 < result.importance_kept < 1


def test_a_step_that_would_overshoot_the_window_yields_to_a_smaller_one():
    groups, layers = _two_layers(100, 90)
    coarse = [GroupChoice(g.name, g.full, (16, 8), g.order, g.lost, g.touches, g.mass) for g in groups[:1]]
    groups = [*coarse, groups[1]]  # a: only 16 -> 8 (half its cost at once); b: one channel at a time
    cost = CountCost("macs", layers)
    total = sum(cost.layer(i, s.cin, s.cout) for i, s in enumerate(layers))
    result = allocate(groups, layers, Goal(cost, 0.95 * total, 0.9 * total))
    assert result.kept[0] == 16 and result.kept[1] < 16  # a's big step would land below the window
    assert 0.9 * total <= result.layer_sum <= 0.95 * total


def test_a_window_the_steps_jump_over_is_bad_input():
    cfg = PruneConfig(reduction=0.4, allocation="cost", round_to=None, tolerance=0.001)
    with pytest.raises(InputError, match="cost allocation removes .* raise prune.tolerance"):
        CostAllocator(depthwise_net(), random_images(16), TASK, cfg, seed=0).prune()


def test_an_unreachable_budget_says_how_far_it_got():
    groups, layers = _two_layers(100, 100)
    cost = CountCost("macs", layers)
    with pytest.raises(InputError, match="cannot reach the macs budget.*max_layer_ratio"):
        allocate(groups, layers, Goal(cost, 0.0, -1.0))


# -- MACs and params budgets on real models -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["macs", "params"])
def test_a_budget_is_met_within_tolerance_in_one_prune(fmnist, target):
    cfg = PruneConfig(target=target, reduction=0.5, allocation="cost")
    model = resnet20()
    pruned, result, spent = CostAllocator(model, fmnist, TASK, cfg, seed=0).prune()
    reached = result.macs_reduction if target == "macs" else result.params_reduction
    assert abs(reached - 0.5) <= cfg.tolerance
    assert result.allocation == "cost" and spent.attempts <= 3
    assert pruned(fmnist.example_input()).shape == (1, 10)
    assert conv_widths(model)["stem.0"] == 16  # the teacher is left as it was


def depthwise_net() -> nn.Module:
    """A MobileNet-style block (expand, depthwise, project) and a head read through a flatten."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(24),
        nn.ReLU6(),
        nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False),
        nn.BatchNorm2d(24),
        nn.ReLU6(),
        nn.Conv2d(24, 16, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.PReLU(16),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 5),
    ).eval()


@pytest.mark.parametrize("name", ["resnet20", "depthwise"])
def test_the_analytic_counts_are_the_counter_s_on_a_pruned_model(name):
    """The allocator's closed forms (per-layer MACs/params from recorded shapes) agree with fvcore's count on
    the pruned model: the allocation lands where it aims, without pruning copies to find out. The depthwise
    net covers one-width layers, a PReLU and a linear layer reading H*W inputs per channel."""
    model, data = (
        (resnet20(), random_images(28, 1, 10)) if name == "resnet20" else (depthwise_net(), random_images(16))
    )
    cfg = PruneConfig(
        reduction=0.4, allocation="cost", round_to=None, tolerance=0.03
    )  # a 2-group net: coarse
    pruned, result, _ = CostAllocator(model, data, TASK, cfg, seed=0).prune()
    example = data.example_input()
    layers = tuple(record_shapes(pruned, example).values())
    counted = count_complexity(pruned, example)
    for what, value in (("macs", counted.macs), ("params", counted.params)):
        analytic = sum(CountCost(what, layers).layer(i, s.cin, s.cout) for i, s in enumerate(layers))
        assert analytic == pytest.approx(value, rel=0.002), what  # MACs: pooling is the only op left out
    assert result.macs_reduction == pytest.approx(0.4, abs=cfg.tolerance)
    assert any(s.cout < s0.cout for s, s0 in zip(layers, record_shapes(model, example).values(), strict=True))


def test_ignored_layers_the_head_and_the_layer_floor_are_respected(fmnist):
    cfg = PruneConfig(reduction=0.4, allocation="cost", ignored_layers=["layer3"], max_layer_ratio=0.5)
    model = resnet20()
    pruned, _, _ = CostAllocator(model, fmnist, TASK, cfg, seed=0).prune()
    before, after = conv_widths(model), conv_widths(pruned)
    assert all(after[n] == before[n] for n in before if n.startswith("layer3"))
    assert all(after[n] >= before[n] * 0.5 for n in before)
    assert pruned.fc.out_features == 10


def test_same_seed_same_student():
    cfg = PruneConfig(reduction=0.5, allocation="cost", importance="random", round_to=None)
    data = random_images(16)
    one, _, _ = CostAllocator(tiny_net(), data, TASK, cfg, seed=3).prune()
    two, _, _ = CostAllocator(tiny_net(), data, TASK, cfg, seed=3).prune()
    assert conv_widths(one) == conv_widths(two) != conv_widths(tiny_net())
    assert all(
        torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True)
    )


# -- latency budgets ------------------------------------------------------------------------------------------


def test_a_latency_budget_is_met_by_the_exported_student_s_prediction(tmp_path):
    """Calibrated for real (quick grid, tiny net): the allocation's predicted p50 is what the latency model
    predicts for the exported student, and it is within the budget."""
    net, data = tiny_net(), random_images(16)
    example = data.example_input()
    cfg = CalibrationConfig(quick=True, holdout=0, cache=str(tmp_path), timeout_s=300)
    latency = calibrate_torch(net, example, "local", cfg).model
    teacher = latency.predict([(layer.cin, layer.cout) for layer in latency.layers])
    budget = 0.7 * teacher
    prune = PruneConfig(target="latency", reduction=0.3, round_to=None)
    pruned, result, spent = CostAllocator(net, data, TASK, prune, seed=0).prune(LatencyGoal(latency, budget))
    exported = latency.predict_layers(read_layers(to_onnx(pruned, example)))
    assert exported == pytest.approx(spent.reached_total, rel=1e-6)
    assert spent.reached_total <= budget
    assert result.target == "latency" and result.reduction_goal == pytest.approx(0.3)


def test_the_allocator_lands_on_widths_the_target_runs_fast():
    """A device where a width off a multiple of 8 runs twice as slow: with no round_to, every width the
    allocator keeps is a multiple of 8 (a latency step may skip channels to land on one)."""
    net, data = tiny_net(), random_images(16)
    latency = _aligned_latency_model(net, data.example_input())
    teacher = latency.predict([(layer.cin, layer.cout) for layer in latency.layers])
    cfg = PruneConfig(target="latency", reduction=0.5, round_to=None)
    pruned, _, spent = CostAllocator(net, data, TASK, cfg, seed=0).prune(LatencyGoal(latency, 0.5 * teacher))
    widths = [w for name, w in conv_widths(pruned).items()]
    assert all(w % 8 == 0 for w in widths) and min(widths) < 32
    assert spent.reached_total <= 0.5 * teacher


def _aligned_latency_model(net: nn.Module, example: torch.Tensor) -> LatencyModel:
    """The real predictor fitted on constructed timings: ms ~ MACs, doubled when a width is off 8."""
    layers = read_layers(to_onnx(net, example))
    tables = {}
    for layer in layers:
        pairs = {(ci, co) for ci in (layer.cin, 24, 20, 16, 13) for co in (layer.cout, 24, 20, 16, 11)}
        pairs = {
            (layer.cin if layer.fixed_in else ci, layer.cout if layer.fixed_out else co) for ci, co in pairs
        }
        samples = []
        for ci, co in sorted(pairs):
            spec = layer.with_widths(ci, co)
            slow = 2.0 if (co % 8 or (ci % 8 and not layer.fixed_in)) else 1.0
            samples.append(Sample(ci, co, 1e-5 * spec.macs * slow + 0.001))
        tables[layer.table_key()] = (layer, samples)
    fits, q, _ = fit_tables(tables)
    return LatencyModel({}, tuple(layers), fits, tuple(x.table_key() for x in layers), q, 1.0, 0.05)


# -- the recipe and the closed loop ---------------------------------------------------------------------------


def test_the_recipe_picks_cost_for_latency_and_refuses_what_cannot_work():
    assert PruneConfig().resolved_allocation == "uniform"
    assert PruneConfig(target="latency").resolved_allocation == "cost"
    assert PruneConfig(target="params", allocation="cost").resolved_allocation == "cost"
    for bad in (
        {"target": "latency", "allocation": "uniform"},
        {"target": "latency", "schedule": "progressive"},
        {"target": "channels", "allocation": "cost"},
        {"latency": {"p50_ms": 0}},
        {"latency": {"treads": 2}},
    ):
        with pytest.raises(ValueError):
            PruneConfig(**bad)


def _pruned_to(budget_ms: float, mape: float | None) -> PruneResult:
    budget = LatencyBudget(
        "local", 1, budget_ms, budget_ms, 2 * budget_ms, 2 * budget_ms, {"mape": mape}, "k", "f"
    )
    return PruneResult(
        "group_l2", "latency", 0.5, 10, 5, 10, 5, 1, (), 1.0, allocation="cost", latency=budget
    )


def _student(p50: float, threads: int = 1) -> Artifact:
    stats = LatencyStats(p50, p50, p50, p50, 0.0, p50, p50)
    profile = Profile("local", {}, threads, 1, stats, 1.0, 1.0, 10)
    return Artifact("student.onnx", "student.onnx", "onnx", "fp32", "0", 1, profiles=(profile,))


def test_a_budget_missed_by_more_than_the_model_s_error_is_said_in_one_line(caplog):
    from edgekd.profile.stage import check_budget

    with caplog.at_level(logging.WARNING, logger="edgekd"):
        within = check_budget(_pruned_to(2.0, 0.08), (_student(2.1),))
        missed = check_budget(_pruned_to(2.0, 0.08), (_student(2.4),))
    assert within is not None and within.met and within.allowed_error == 0.08
    assert missed is not None and not missed.met and missed.measured_ms == 2.4
    lines = [r.getMessage() for r in caplog.records if "latency budget" in r.getMessage()]
    assert len(lines) == 1 and "20% over" in lines[0]
    assert check_budget(_pruned_to(2.0, None), (_student(2.1, threads=2),)) is None  # not timed there


def test_the_calibrate_and_prune_stage_entries_fit_the_report_schema():
    from edgekd.latency.stage import info as calibrate_info
    from edgekd.prune.stage import info as prune_info
    from edgekd.report.schema import CalibrateEntry
    from edgekd.results import CalibrateResult

    result = CalibrateResult(
        "local", 1, 40, {"within_10pct": 0.9, "mape": 0.05, "n": 6}, "/c/m.json", "m", False, 9.0
    )
    CalibrateEntry.model_validate({"seconds": 9.5, **calibrate_info(None, result)})  # type: ignore[arg-type]
    entry = prune_info(None, _pruned_to(2.0, 0.05))  # type: ignore[arg-type]
    assert entry["allocation"] == "cost" and entry["budget_ms"] == 2.0
    assert entry["latency_model"]["error"] == {"mape": 0.05} and entry["latency_model"]["cache_key"] == "k"
