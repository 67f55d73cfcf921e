"""Accuracy recovery around pruning: sparse training before it (``prune.sparsity``) and progressive
prune-and-distill (``prune.schedule: progressive``), on the shipped teacher and real Fashion-MNIST images."""

from __future__ import annotations

import json
import math

import pytest
import torch

from edgekd.engine.optim import build_optimizer, build_scheduler
from edgekd.models import build_model
from edgekd.recipe.prune import SparsityConfig
from edgekd.recipe.schema import ModelSpec, PruneConfig
from edgekd.sparsify import GroupRegularizer, PlannedRegularizer, near_zero_share, sized_reg
from tests.conftest import QUICKSTART, SMALL_KD_RUN, SMALL_RUN, TEACHER, cli, sets


def _teacher() -> torch.nn.Module:
    model = build_model(ModelSpec(name="resnet20"), 10, 1)
    model.load_state_dict(torch.load(TEACHER, weights_only=True))
    return model.eval()


def _penalty_alone(model: torch.nn.Module, regularizer, sparsity: SparsityConfig, steps: int) -> None:
    """Run the sparse phase's optimiser and schedule with zero task gradients: only the penalty moves weights."""
    optimizer = build_optimizer(model.parameters(), sparsity)
    scheduler = build_scheduler(optimizer, sparsity, steps)
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        regularizer.regularize()
        optimizer.step()
        scheduler.step()


def test_the_group_regulariser_drives_the_weakest_groups_towards_zero(small_data):
    model = _teacher()
    regularizer = GroupRegularizer(model, small_data.example_input(1), PruneConfig(sparsity={"reg": 0.05}))
    before = regularizer.group_norms()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):  # the penalty alone: zero task gradients, so only the regulariser moves weights
        optimizer.zero_grad(set_to_none=False)
        for param in model.parameters():
            param.grad = torch.zeros_like(param)
        regularizer.regularize()
        optimizer.step()
    after = regularizer.group_norms()
    assert len(after) == len(before) > 100
    assert sum(after) < 0.9 * sum(before)
    assert near_zero_share(after) > near_zero_share(before) + 0.05
    # growing regularisation: groups that started weakest lose a larger share of their norm
    order = sorted(range(len(before)), key=before.__getitem__)
    weak, strong = order[: len(order) // 4], order[-len(order) // 4 :]
    kept = [after[i] / before[i] for i in range(len(before))]
    assert sum(kept[i] for i in weak) / len(weak) < sum(kept[i] for i in strong) / len(strong)


def test_auto_reg_shrinks_the_weakest_group_to_about_its_target_over_the_phase(small_data):
    """reg: auto is sized from the phase's own steps and schedule; run exactly that phase on the penalty alone."""
    model, steps = _teacher(), 200
    cfg = PruneConfig(sparsity={"epochs": 1, "lr": 0.01, "shrink_to": 0.05})
    regularizer = GroupRegularizer(model, small_data.example_input(1), cfg, sized_reg(cfg.sparsity, steps))
    before = regularizer.group_norms(raw=True)
    _penalty_alone(model, regularizer, cfg.sparsity, steps)
    after = regularizer.group_norms(raw=True)
    weakest = min(range(len(before)), key=before.__getitem__)
    # about 0.05: a little below, as slices shared with a neighbouring group are penalised by both groups
    assert 0.01 < after[weakest] / before[weakest] < 0.1
    # DepGraph's fixed 5e-4 over the same phase would have left it ~0.9 of its norm: auto is ~40x stronger
    assert sized_reg(cfg.sparsity, steps) > 20 * 5e-4


def test_the_planned_penalty_shrinks_only_the_channels_pruning_removes(small_data):
    """target: pruned: the channels a prune to the goal would remove reach shrink_to of their norm on the penalty
    alone; every other channel keeps its weights; pruning the result then removes the shrunk ones."""
    from edgekd.prune.oneshot import prune_model
    from edgekd.tasks import get_task

    model, steps = _teacher(), 100
    cfg = PruneConfig(reduction=0.75, round_to=None, sparsity={"epochs": 1, "target": "pruned"})
    task = get_task("classification", small_data)
    _, plan = prune_model(model, small_data, task, cfg, seed=0)
    removed = {layer.name: layer.before - layer.after for layer in plan.layers}
    reg = sized_reg(cfg.sparsity, steps)
    regularizer = PlannedRegularizer(model, small_data.example_input(1), cfg, reg, removed)
    assert 0.35 < regularizer.penalised_share < 0.65  # about half the channels at -75% MACs
    before = torch.tensor(regularizer.group_norms(raw=True))
    _penalty_alone(model, regularizer, cfg.sparsity, steps)
    after = torch.tensor(regularizer.group_norms(raw=True))
    kept = after / before
    shrunk = kept < 0.5
    assert abs(shrunk.float().mean().item() - regularizer.penalised_share) < 0.02
    # the chosen channels end within shrink_to (0.05); the rest lose only the slices they share with them (the
    # input columns of chosen channels in their own rows) and the optimiser's weight decay
    assert kept[shrunk].max() <= 0.05 and kept[~shrunk].min() > 0.6
    # ... and pruning to the same goal then removes exactly the channels whose norm was shrunk
    pruned, _ = prune_model(model, small_data, task, cfg, seed=0)
    survivors = torch.tensor(
        GroupRegularizer(pruned, small_data.example_input(1), cfg, reg).group_norms(raw=True)
    )
    assert len(survivors) == int((~shrunk).sum())
    assert survivors.min() > 0.5 * after[~shrunk].min()  # a shrunk channel kept would be ~0.05 of one


def test_auto_reg_scales_with_the_phase_and_is_for_sgd_only():
    one, three = sized_reg(SparsityConfig(epochs=1), 430), sized_reg(SparsityConfig(epochs=3), 430)
    assert three == pytest.approx(one / 3, rel=0.06)  # three times the steps at the same schedule shape
    stronger = sized_reg(SparsityConfig(epochs=1, shrink_to=0.01), 430)
    assert stronger == pytest.approx(one * math.log(100) / math.log(20), rel=0.1)  # ~exp(-reg * sum(lr))
    # target: pruned penalises its channels with gamma 1, not the weakest group's alpha (16)
    assert sized_reg(SparsityConfig(epochs=1, target="pruned"), 430) == pytest.approx(16 * one, rel=0.03)
    with pytest.raises(ValueError, match="with optimizer adamw give reg a number"):
        SparsityConfig(optimizer="adamw")
    assert SparsityConfig(optimizer="adamw", reg=5e-4).reg == 5e-4


@pytest.mark.parametrize("steps", [4, 100, 430])
def test_auto_reg_is_sized_by_simulating_the_phase(steps):
    """Short phases break the closed form (momentum has not built up over 4 steps; over 100 at lr 0.01 it
    overshoots): a weight under the sized decay, through the phase's own optimiser, ends just within shrink_to."""
    cfg = SparsityConfig(epochs=1, shrink_to=0.05)
    reg = sized_reg(cfg, steps)
    weight = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = build_optimizer([weight], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    for _ in range(steps):
        weight.grad = reg * cfg.alpha * weight.detach()
        optimizer.step()
        scheduler.step()
    assert 0.03 < abs(weight.item()) <= 0.05


def test_progressive_needs_a_budget_not_a_channel_ratio():
    with pytest.raises(ValueError, match="use target: macs or params"):
        PruneConfig(schedule="progressive", target="channels")


def test_compress_with_sparse_training_and_progressive_pruning(tmp_path):
    out = tmp_path / "run"
    recovery = sets(
        "prune.sparsity.epochs=1",
        "prune.schedule=progressive",
        "prune.progressive.steps=2",
        "prune.progressive.epochs=1",
        "prune.iterative_steps=1",
    )
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *SMALL_KD_RUN, *recovery)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    sparsify = report["stages"]["sparsify"]
    # reg: auto (the default), sized to this phase: 461 training images at batch 128 are 4 steps
    assert sparsify["epochs"] == 1 and sparsify["reg_auto"] is True
    assert sparsify["reg"] == pytest.approx(sized_reg(SparsityConfig(epochs=1), 4))
    assert sparsify["best_epoch"] == 1  # the regularised weights go on to pruning, never epoch 0's
    assert 0.0 <= sparsify["near_zero_groups_before"] <= sparsify["near_zero_groups_after"] <= 1.0
    norms = sparsify["group_norms_before"], sparsify["group_norms_after"]
    assert len(norms[0]) == len(norms[1]) > 0  # one norm per channel group
    assert norms[0] != norms[1]  # the sparse epoch moved them
    assert (out / "plots" / "group_norms.png").is_file()
    assert "Channel-group norms before and after sparse training" in (out / "report.html").read_text()
    assert list(report["stages"]).index("sparsify") < list(report["stages"]).index("prune")
    assert abs(report["compression"]["macs_reduction"] - 0.75) <= 0.01
    log = (out / "edgekd.log").read_text()
    assert "prune step 1 of 2" in log and "prune step 2 of 2" in log
    assert (out / "state" / "sparse.pt").is_file()

    proc = cli("compress", str(QUICKSTART), "--out", str(out), "--resume", *SMALL_KD_RUN, *recovery)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads((out / "report.json").read_text())["stages"]
    assert resumed["sparsify"].get("reused") and resumed["prune"].get("reused")
    assert resumed["sparsify"]["group_norms_after"] == norms[1]  # a reused stage still reports what it did
    assert (out / "plots" / "group_norms.png").is_file()


def test_compress_with_the_planned_sparse_target(tmp_path):
    out = tmp_path / "run"
    planned = sets("prune.sparsity.epochs=1", "prune.sparsity.target=pruned", "prune.iterative_steps=1")
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *SMALL_KD_RUN, *planned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    sparsify = report["stages"]["sparsify"]
    assert sparsify["target"] == "pruned" and sparsify["reg_auto"] is True
    assert sparsify["reg"] == pytest.approx(sized_reg(SparsityConfig(epochs=1, target="pruned"), 4))
    # about half the channel groups are planned out at -75% MACs; the phase shrinks those, and only those
    assert 0.35 < sparsify["penalised_groups"] < 0.65
    kept = [a / b for a, b in zip(sparsify["group_norms_after"], sparsify["group_norms_before"], strict=True)]
    assert sum(k < 0.3 for k in kept) / len(kept) == pytest.approx(sparsify["penalised_groups"], abs=0.02)
    assert abs(report["compression"]["macs_reduction"] - 0.75) <= 0.01
    assert "penalising the" in (out / "edgekd.log").read_text()


def test_the_planned_sparse_target_needs_uniform_allocation():
    with pytest.raises(ValueError, match="plans its cut with allocation: uniform"):
        PruneConfig(target="latency", sparsity={"epochs": 1, "target": "pruned"})


def test_the_onecycle_schedule_peaks_at_lr_and_anneals_below_it():
    """``schedule: onecycle`` (the quickstart's and the recommended recipes') warms up to ``lr`` and anneals far
    below the start; ``cosine`` starts at ``lr`` and decays to ~0."""
    from edgekd.engine.optim import build_optimizer, build_scheduler
    from edgekd.recipe import OptimConfig

    def lrs(schedule: str) -> list[float]:
        cfg = OptimConfig(epochs=2, lr=0.05, schedule=schedule)
        optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=50)
        seen = []
        for _ in range(100):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    onecycle, cosine = lrs("onecycle"), lrs("cosine")
    assert max(onecycle) == pytest.approx(0.05) and onecycle[0] < 0.05 / 10
    assert 10 < onecycle.index(max(onecycle)) < 50  # the peak comes in the first half (30% by default)
    assert onecycle[-1] < 0.05 / 1000
    assert cosine[0] == pytest.approx(0.05) and cosine[-1] < 0.05 / 100


def test_the_quickstart_distillation_recovers_the_pruned_student(tmp_path):
    """The shipped quickstart's own distill settings (CE + KD on un-augmented images, the teacher's outputs
    cached, OneCycle to 0.05; not SMALL_KD_RUN) lift the pruned student well above where pruning left it."""
    out = tmp_path / "run"
    data = (*SMALL_RUN, *sets("data.train_limit=2048", "data.eval_limit=512"))
    assert cli("prune", str(QUICKSTART), "--out", str(out), *data).returncode == 0
    untrained = cli(
        "distill", str(QUICKSTART), "--out", str(out), "--json", *data, "--set", "distill.epochs=0"
    )
    assert untrained.returncode == 0, untrained.stderr[-2000:]
    trained = cli("distill", str(QUICKSTART), "--out", str(out), "--json", *data, "--set", "distill.epochs=2")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert [set(epoch["loss_terms"]) for epoch in json.loads(trained.stdout)["history"]] == [{"ce", "kd"}] * 2
    before = json.loads(untrained.stdout)["metrics"]["accuracy"]
    after = json.loads(trained.stdout)["metrics"]["accuracy"]
    assert after > before + 0.1 and after > 0.7, (before, after)
    log = (out / "edgekd.log").read_text()
    assert "distill: teacher outputs cached for 1843 samples" in log  # 2048 minus 205 for validation, once


def test_regularised_training_keeps_its_last_epoch_even_when_validation_prefers_the_incoming_weights():
    """Sparse training's epochs score below the teacher they started from; selecting on validation would keep
    epoch 0 and silently undo the phase, so such training keeps its last epoch (FitOptions.keep_last)."""
    from edgekd.engine.trainer import _Progress
    from edgekd.results import EpochLog
    from edgekd.tasks import get_task

    task, model = get_task("classification"), torch.nn.Linear(2, 2)
    start = _Progress.start(model, {"accuracy": 0.95})
    worse = EpochLog(epoch=1, train_loss=0.1, loss_terms={}, metrics={"accuracy": 0.93}, lr=0.01, seconds=1.0)
    assert start.after(worse, model, task).best_epoch == 0  # distillation: the better weights win
    assert start.after(worse, model, task, keep_last=True).best_epoch == 1  # regularised: the last epoch
