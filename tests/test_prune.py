"""The prune stage on real models and real Fashion-MNIST images (28×28 grey, or resized to 64×64 RGB)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import DataBundle, Preprocessing, TensorSplit, build_data
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.models.complexity import count_complexity
from edgekd.prune import IMPORTANCES, needs_gradients, prune_model
from edgekd.prune.search import search_ratio
from edgekd.recipe.schema import DataConfig, ModelSpec, PruneConfig
from edgekd.tasks import get_task

TASK = get_task("classification")


@pytest.fixture(scope="module")
def fmnist() -> DataBundle:
    return build_data(DataConfig(train_limit=128, eval_limit=8))


@pytest.fixture(scope="module")
def fmnist64(fmnist: DataBundle) -> DataBundle:
    """The same real images, bilinearly resized to 64×64 and repeated to 3 channels (torchvision models)."""

    def grow(split: TensorSplit) -> TensorSplit:
        images = F.interpolate(split.images.float(), size=(64, 64), mode="bilinear", align_corners=False)
        return TensorSplit(images.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1), split.targets)

    stats = fmnist.preprocessing
    rgb = Preprocessing(mean=stats.mean * 3, std=stats.std * 3)
    return DataBundle("fashion_mnist_64", grow(fmnist.train), grow(fmnist.eval), 10, rgb)


def resnet20(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name="resnet20"), num_classes=num_classes, in_channels=1)


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name=f"torchvision:{name}"), num_classes=10, in_channels=3)


def widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# -- registry ------------------------------------------------------------------------------------------------


def test_registry_has_the_documented_criteria() -> None:
    assert {"group_l1", "group_l2", "bn_scale", "taylor", "random", "lamp", "fpgm"} <= set(IMPORTANCES)
    for name in IMPORTANCES:
        doc = IMPORTANCES.get(name).__doc__ or ""
        assert f"prune: {{importance: {name}" in doc, f"{name}: docstring lacks its recipe snippet"
        assert "arXiv" in doc, f"{name}: docstring lacks the paper"
    assert needs_gradients("taylor") and not needs_gradients("group_l2")
    with pytest.raises(InputError, match="did you mean 'taylor'"):
        needs_gradients("talyor")


@pytest.mark.parametrize("importance", IMPORTANCES.names())
def test_every_importance_prunes_resnet20(importance: str, fmnist: DataBundle) -> None:
    """One probe per criterion; gradient criteria also run their per-step recalibration (two steps)."""
    model = resnet20()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    steps = 2 if needs_gradients(importance) else 1
    cfg = PruneConfig(
        importance=importance, target="channels", reduction=0.5, iterative_steps=steps, calibration_batches=1
    )
    pruned, result = prune_model(model, fmnist, TASK, cfg, seed=0)

    x = fmnist.example_input(4)
    assert pruned(x).shape == (4, 10)
    assert pruned.fc.out_features == 10
    assert result.macs_after < result.macs_before and result.params_after < result.params_before
    assert widths(pruned)["layer1.0.conv1"] < 16
    assert all(p.grad is None for p in pruned.parameters())
    # The teacher is left untouched (distillation needs it).
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())


# -- MACs / params targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reduction"),
    [("resnet20", 0.5), ("resnet20", 0.74), ("resnet18", 0.5), ("mobilenet_v2", 0.74)],
)
def test_macs_target_lands_within_tolerance(
    name: str, reduction: float, fmnist: DataBundle, fmnist64: DataBundle
) -> None:
    model, data = (resnet20(), fmnist) if name == "resnet20" else (torchvision_model(name), fmnist64)
    # round_to=None: this is about the search's precision (rounding is tested on its own below)
    cfg = PruneConfig(target="macs", reduction=reduction, tolerance=0.01, iterative_steps=1, round_to=None)
    pruned, result = prune_model(model, data, TASK, cfg, seed=0)

    x = data.example_input()
    assert abs(result.macs_reduction - reduction) <= cfg.tolerance
    # Independently recount with the one counter: the record states the returned model.
    assert count_complexity(pruned, x).macs == result.macs_after
    assert count_complexity(model, x).macs == result.macs_before
    assert task_output(pruned, x).shape == (1, 10)


def task_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return TASK.output_tensor(model.eval()(x))


def test_params_target(fmnist: DataBundle) -> None:
    cfg = PruneConfig(target="params", reduction=0.6, tolerance=0.02, iterative_steps=1, round_to=None)
    _, result = prune_model(resnet20(), fmnist, TASK, cfg, seed=0)
    assert abs(result.params_reduction - 0.6) <= 0.02


def test_round_to_is_kept_when_it_can_meet_the_goal_and_lowered_when_it_cannot(fmnist: DataBundle) -> None:
    """Widths stay multiples of round_to; a goal its coarse steps jump over lowers it (recorded)."""
    loose = PruneConfig(target="macs", reduction=0.74, tolerance=0.03, iterative_steps=1, round_to=8)
    pruned, result = prune_model(resnet20(), fmnist, TASK, loose, seed=0)
    assert result.round_to == 8 and abs(result.macs_reduction - 0.74) <= 0.03
    assert all(m.out_channels % 8 == 0 for m in pruned.modules() if isinstance(m, nn.Conv2d))

    tight = loose.model_copy(update={"reduction": 0.5, "tolerance": 0.005})
    _, result = prune_model(resnet20(), fmnist, TASK, tight, seed=0)
    assert abs(result.macs_reduction - 0.5) <= 0.005  # the budget wins over the rounding ...
    assert result.round_to in (4, 2, None)  # ... which the result records


def test_a_frozen_model_is_pruned_and_left_frozen(fmnist: DataBundle) -> None:
    """A teacher frozen by distillation (requires_grad=False) must prune like a trainable one."""
    model = resnet20().requires_grad_(False)
    cfg = PruneConfig(target="macs", reduction=0.5, tolerance=0.02, iterative_steps=1, round_to=None)
    _, result = prune_model(model, fmnist, TASK, cfg, seed=0)
    assert abs(result.macs_reduction - 0.5) <= 0.02
    assert not any(p.requires_grad for p in model.parameters())


def test_infeasible_target_says_what_was_reached(fmnist: DataBundle) -> None:
    cfg = PruneConfig(target="macs", reduction=0.9, max_layer_ratio=0.3, iterative_steps=1)
    with pytest.raises(InputError, match=r"cannot remove 90.0% of macs \(reached .*max_layer_ratio"):
        prune_model(resnet20(), fmnist, TASK, cfg, seed=0)


def test_search_handles_step_functions_and_infeasible_goals() -> None:
    def staircase(ratio: float) -> float:  # MACs of a 5-stage net whose widths are whole channels
        kept = sum(int(w * (1 - ratio)) ** 2 for w in (16, 32, 64, 128, 256))
        return 1 - kept / sum(w * w for w in (16, 32, 64, 128, 256))

    for goal in (0.1, 0.3, 0.5, 0.74, 0.9):
        outcome = search_ratio(staircase, goal, 0.005, 0.95)
        assert abs(outcome.achieved - goal) <= 0.005
        assert outcome.probes[-1] == (outcome.ratio, outcome.achieved)
    with pytest.raises(InputError, match="reached 28.5% at the maximum"):
        search_ratio(lambda r: 0.3 * r, 0.5, 0.01, 0.95)
    with pytest.raises(InputError, match="jumps over the window"):
        search_ratio(lambda r: 0.0 if r < 0.4 else 0.8, 0.5, 0.01, 0.95)


# -- layers --------------------------------------------------------------------------------------------------


def test_ignored_layers_keep_their_width(fmnist: DataBundle) -> None:
    ignored = ["layer1.0.conv1", "layer3.1.conv1"]
    cfg = PruneConfig(target="channels", reduction=0.5, iterative_steps=1, ignored_layers=ignored)
    pruned, result = prune_model(resnet20(), fmnist, TASK, cfg, seed=0)

    after = widths(pruned)
    assert after["layer1.0.conv1"] == 16 and after["layer3.1.conv1"] == 64
    assert after["layer1.1.conv1"] == 8 and after["layer3.0.conv1"] == 32
    records = {r.name: r for r in result.layers}
    assert (records["layer1.0.conv1"].before, records["layer1.0.conv1"].after) == (16, 16)
    assert records["layer1.0.conv1"].kind == "Conv2d"
    assert records["fc"].before == records["fc"].after == 10
    assert set(records) >= {n for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)}


def test_unknown_ignored_layer_suggests_a_name(fmnist: DataBundle) -> None:
    cfg = PruneConfig(target="channels", reduction=0.5, ignored_layers=["layer1.0.cnv1"])
    with pytest.raises(InputError, match=r"no module 'layer1.0.cnv1'; did you mean 'layer1.0.conv1'"):
        prune_model(resnet20(), fmnist, TASK, cfg, seed=0)


def test_head_found_by_graph_not_by_width(fmnist: DataBundle) -> None:
    """16 classes collide with the 16-wide first stage: the stage is pruned, only the real head is kept."""
    cfg = PruneConfig(target="channels", reduction=0.5, iterative_steps=1)
    pruned, _ = prune_model(resnet20(num_classes=16), fmnist, TASK, cfg, seed=0)
    assert pruned.fc.out_features == 16
    assert widths(pruned)["stem.0"] == 8


class TinySegNet(nn.Module):
    """A miniature FCN: the classifier conv's output is upsampled to the input size (segmentation head)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.classifier(self.body(x)), size=x.shape[-2:], mode="bilinear")


def test_segmentation_head_keeps_num_classes(fmnist: DataBundle) -> None:
    torch.manual_seed(0)
    cfg = PruneConfig(target="channels", reduction=0.5, iterative_steps=1)
    pruned, _ = prune_model(TinySegNet(), fmnist, TASK, cfg, seed=0)
    assert pruned.classifier.out_channels == 4
    assert pruned.body[0].out_channels == 8
    assert pruned(fmnist.example_input()).shape == (1, 4, 28, 28)


class HardCodedFlatten(nn.Module):
    """Reshapes with a hard-coded channel count: traceable, but broken once channels are removed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, 2, 1)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).reshape(x.shape[0], 8 * 14 * 14))


def test_model_that_breaks_when_pruned_is_an_input_error(fmnist: DataBundle) -> None:
    cfg = PruneConfig(target="channels", reduction=0.5, iterative_steps=1, round_to=None)  # 8 → 4 channels
    with pytest.raises(InputError, match="the pruned model fails a forward pass.*prune.ignored_layers"):
        prune_model(HardCodedFlatten(), fmnist, TASK, cfg, seed=0)
    # ... and ignoring the offending layer is the documented way out.
    pruned, result = prune_model(
        HardCodedFlatten(), fmnist, TASK, cfg.model_copy(update={"ignored_layers": ["conv"]}), 0
    )
    assert pruned.conv.out_channels == 8 and result.macs_after == result.macs_before


def test_model_that_rejects_the_data_names_the_layer(fmnist: DataBundle) -> None:
    rgb_model = build_model(ModelSpec(name="resnet20"), num_classes=10, in_channels=3)
    with pytest.raises(InputError, match=r"the model fails a forward pass in module 'stem.0'"):
        prune_model(rgb_model, fmnist, TASK, PruneConfig(target="channels", reduction=0.5), seed=0)


# -- determinism ---------------------------------------------------------------------------------------------


def test_same_seed_same_student(fmnist: DataBundle) -> None:
    cfg = PruneConfig(
        importance="random", global_pruning=True, target="channels", reduction=0.5, iterative_steps=2
    )
    a, ra = prune_model(resnet20(), fmnist, TASK, cfg, seed=0)
    b, rb = prune_model(resnet20(), fmnist, TASK, cfg, seed=0)
    c, _ = prune_model(resnet20(), fmnist, TASK, cfg, seed=1)
    assert ra.layers == rb.layers
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    state_c = c.state_dict()
    differs = any(
        v.shape != state_c[k].shape or not torch.equal(v, state_c[k]) for k, v in a.state_dict().items()
    )
    assert differs, "random importance ignored the seed"


def test_macs_search_is_deterministic(fmnist: DataBundle) -> None:
    cfg = PruneConfig(
        importance="random", global_pruning=True, target="macs", reduction=0.5, iterative_steps=2
    )
    a, ra = prune_model(resnet20(), fmnist, TASK, cfg, seed=3)
    b, rb = prune_model(resnet20(), fmnist, TASK, cfg, seed=3)
    assert ra.layers == rb.layers and ra.macs_after == rb.macs_after
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
