"""The fast paths of issue 7 behave exactly like the slow ones they replace.

* indexed batches: the loader says which samples a batch holds, and they are the samples it served;
* the teacher cache (no augmentation): distilling with cached teacher outputs ends with the same bits as
  running the teacher every step, and cached hooked features equal freshly computed ones;
* the profiler's minimum measuring time: the CI may not stop a measurement before it.

Real Fashion-MNIST, the shipped teacher, real subprocess probes; no wall-clock asserts on speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgekd.data.base import DataBundle, TensorSplit
from edgekd.distill import DistillObjective, train_student
from edgekd.distill.hooks import FeatureHooks
from edgekd.distill.teacher_cache import build_teacher_cache
from edgekd.distill.teacher_inference import inference_copy
from edgekd.models import build_model
from edgekd.profile import PROBE_PATH, ProbeSettings
from edgekd.profile import probe as probe_module
from edgekd.recipe import load_recipe
from edgekd.recipe.schema import DataConfig, DistillConfig, ModelSpec, ProfileConfig
from edgekd.tasks import get_task
from edgekd.teacher import build_teacher
from tests.conftest import QUICKSTART, run_context

TASK = get_task("classification")


@pytest.fixture(scope="module")
def teacher(small_data):
    return build_teacher(load_recipe(QUICKSTART), small_data)


def tiny_student(data) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(name="resnet_cifar", args={"depth": 8, "width": 4}), 10, data.in_channels)


class ForwardCounter:
    """Counts forward passes of a real module through a forward hook, while in a ``with`` block."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.calls = model, 0

    def __enter__(self) -> ForwardCounter:
        self.handle = self.model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


# ------------------------------------------------------------------------------------------- indexed batches
def test_indexed_batches_are_the_served_batches_and_name_their_samples(small_data):
    loader = small_data.train_loader(100, augment=True, seed=3)
    loader.set_epoch(2)
    plain = list(loader)
    indexed = list(loader.indexed())
    assert len(plain) == len(indexed) == len(loader)
    for (images, targets), batch in zip(plain, indexed, strict=True):
        assert torch.equal(images, batch.images) and torch.equal(targets, batch.targets)
        assert torch.equal(targets, small_data.train.targets[batch.indices])
    seen = torch.cat([b.indices for b in indexed])
    assert torch.equal(seen.sort().values, torch.arange(len(small_data.train)))  # each sample once

    clean = small_data.train_loader(100, augment=False, seed=3)
    for batch in clean.indexed():
        assert torch.equal(batch.images, clean.normalize(small_data.train.images[batch.indices]))


# ------------------------------------------------------------------------------------------- teacher cache
def distill_once(teacher, data, cache_mib: float, losses: list[dict], fuse: bool):
    student = tiny_student(data)
    cfg = DistillConfig(epochs=2, lr=0.05, teacher_cache_mib=cache_mib, losses=losses, fuse_teacher=fuse)
    data_cfg = DataConfig(augment=False, batch_size=48)
    with ForwardCounter(teacher) as counter:
        result = train_student(run_context(data, [teacher], distill=cfg, data=data_cfg), student)
    return student, result, counter.calls


LOGITS = [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}]
FEATURES = [{"name": "kd", "weight": 1.0}, {"name": "at", "weight": 500.0}]  # hooks layer1..3 of both models


@pytest.mark.parametrize(
    ("losses", "fuse"),
    [(LOGITS, False), (LOGITS, True), (FEATURES, True)],
    ids=["logits", "logits-fused-teacher", "features"],
)
def test_cached_teacher_trains_bit_identically_to_the_per_step_teacher(small_data, teacher, losses, fuse):
    # 200 samples at batch 48: four full batches and a short one, shuffled differently every epoch
    data = DataBundle(
        name="fmnist-200",
        train=small_data.train.head(200),
        eval=TensorSplit(small_data.eval.images[:128], small_data.eval.targets[:128]),
        num_classes=10,
        preprocessing=small_data.preprocessing,
    )
    cached, cached_result, cached_calls = distill_once(teacher, data, 64, losses, fuse)
    stepped, stepped_result, stepped_calls = distill_once(teacher, data, 0, losses, fuse)

    if not fuse or losses is FEATURES:  # the teacher module itself runs (hooked teachers are never fused)
        batches = -(-200 // 48)
        assert stepped_calls == 1 + 2 * batches  # shape probe + every step of both epochs
        assert cached_calls == 1 + batches  # shape probe + one pass to fill the cache
    for key, value in stepped.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value), key
    assert [h.train_loss for h in cached_result.history] == [h.train_loss for h in stepped_result.history]
    assert cached_result.metrics == stepped_result.metrics


def test_augmented_training_runs_the_teacher_every_step(small_data, teacher):
    student = tiny_student(small_data)
    cfg = DistillConfig(epochs=1, teacher_cache_mib=64, fuse_teacher=False)
    data_cfg = DataConfig(augment=True, batch_size=256)
    with ForwardCounter(teacher) as counter:
        train_student(run_context(small_data, [teacher], distill=cfg, data=data_cfg), student)
    assert counter.calls == 1 + len(small_data.train_loader(256, augment=True, seed=0))


def test_cached_features_equal_the_features_of_a_fresh_forward(small_data, teacher):
    hooks = FeatureHooks(teacher, ["layer2", "layer3.2.bn2"], role="teacher")
    try:

        def forward(images):
            with torch.inference_mode():
                out = teacher(images)
            return [out.clone()], [{k: v.clone() for k, v in hooks.features.items()}]

        in_order = small_data.train_loader(128, augment=False, seed=0, shuffle=False)
        cache = build_teacher_cache(
            forward, ((b.images, b.indices) for b in in_order.indexed()), len(small_data.train), 2**30
        )
        assert cache is not None and cache.nbytes > 0
        shuffled = small_data.train_loader(128, augment=False, seed=9)
        for batch in shuffled.indexed():
            outs, feats = forward(batch.images)
            got_outs, got_feats = cache.lookup(batch.indices)
            assert torch.equal(got_outs[0], outs[0])
            assert feats[0].keys() == got_feats[0].keys() == {"layer2", "layer3.2.bn2"}
            for name, value in feats[0].items():
                assert torch.equal(got_feats[0][name], value), name
    finally:
        hooks.remove()


def test_fused_teacher_copy_matches_the_teacher_or_is_not_used(small_data, teacher):
    example = small_data.example_input(16)
    fast = inference_copy(teacher, example, TASK.output_tensor)
    assert fast is not None and not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    with torch.inference_mode():
        assert torch.allclose(fast(example), teacher(example), rtol=1e-4, atol=1e-4)
    assert all(isinstance(m, nn.BatchNorm2d) for m in [teacher.stem[1]])  # the teacher is untouched

    class ValueBranch(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(28 * 28, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) if x.sum() > 0 else -self.fc(x.flatten(1))

    assert inference_copy(ValueBranch(), example, TASK.output_tensor) is None

    student = tiny_student(small_data)
    for losses, fused in ((LOGITS, True), (FEATURES, False)):
        specs = DistillConfig(losses=losses).losses
        objective = DistillObjective(student, [teacher], specs, TASK, 10, example, fuse_teachers=True)
        assert (objective._runners[0] is not teacher) is fused
        objective.close()


def test_cache_over_budget_keeps_the_teacher_running(small_data, teacher):
    student = tiny_student(small_data)
    cfg = DistillConfig()
    objective = DistillObjective(student, [teacher], cfg.losses, TASK, 10, small_data.example_input(2))
    try:
        loader = small_data.train_loader(128, augment=False, seed=0, shuffle=False)
        assert objective.cache_teacher(loader, budget_bytes=16) is False
        assert objective.teacher_cache is None
        assert objective.cache_teacher(loader, budget_bytes=2**20) is True
        batch = next(small_data.train_loader(128, augment=False, seed=1).indexed())
        cached_loss, _ = objective(batch.images, batch.targets, indices=batch.indices)
        fresh_loss, _ = objective(batch.images, batch.targets)  # no indices: the teacher runs
        assert torch.equal(cached_loss, fresh_loss)
        with pytest.raises(ValueError, match="un-augmented"):
            objective.cache_teacher(small_data.train_loader(128, augment=True, seed=0), 2**20)
    finally:
        objective.close()


# ------------------------------------------------------------------------------------ profiler minimum time
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [x], [y], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("perf") / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def probe(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(PROBE_PATH), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_ci_cannot_stop_the_probe_before_the_minimum_time(tiny_onnx):
    # a CI target of ±50% is met at the first check: only the minimum time keeps the probe measuring
    base = [
        str(tiny_onnx),
        "--warmup",
        "1",
        "--ci-target",
        "0.5",
        "--min-runs",
        "10",
        "--max-runs",
        "10000000",
    ]
    quick = probe(*base, "--time-budget", "5", "--min-time", "0")
    assert (quick["stop_reason"], quick["min_time_s"]) == ("ci_target", 0.0)
    held = probe(*base, "--time-budget", "5", "--min-time", "0.25")
    assert held["stop_reason"] == "ci_target" and held["min_time_s"] == 0.25
    assert held["measure_s"] >= 0.25 and held["runs"] > quick["runs"]
    # the floor never exceeds the budget, and by default it is half of it
    capped = probe(*base, "--time-budget", "0.2", "--min-time", "30")
    assert (capped["stop_reason"], capped["min_time_s"]) == ("time_budget", 0.2)
    assert probe(*base, "--time-budget", "0.3")["min_time_s"] == pytest.approx(0.15)
    assert probe(str(tiny_onnx), "--runs", "3")["min_time_s"] is None


def test_min_time_setting_reaches_the_probe():
    cfg = ProfileConfig(time_budget_s=2.0, min_time_s=0.7)
    args = probe_module.parse_args(["m.onnx", *ProbeSettings.from_config(cfg, threads=1).argv()])
    assert args.min_time == 0.7 and probe_module.min_time(args) == 0.7
    default = probe_module.parse_args(["m.onnx", *ProbeSettings.from_config(ProfileConfig(), 1).argv()])
    assert default.min_time is None and probe_module.min_time(default) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        ProfileConfig(min_time_s=-1)
