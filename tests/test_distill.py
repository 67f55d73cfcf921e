"""Distillation losses (every registered one), the objective, and the shared training loop."""

from __future__ import annotations

import copy

import pytest
import torch

from edgekd import distill
from edgekd.distill import LOSSES, DistillObjective
from edgekd.distill.hooks import FeatureHooks
from edgekd.distill.losses.kd import soft_kl
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.trainer import FitOptions, fit
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.recipe.schema import DataConfig, DistillConfig, LossSpec, ModelSpec
from edgekd.tasks import get_task
from tests.conftest import run_context

TASK = get_task("classification")


def tiny(width: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec(name="resnet20", args={"width": width}), 10, 1)


CLASSIFICATION_LOSSES = [name for name in LOSSES.names() if not LOSSES.get(name).dense]


@pytest.mark.parametrize("name", CLASSIFICATION_LOSSES)  # dense losses: tests/test_losses.py on N×C×H×W maps
def test_every_loss_gives_a_finite_scalar_with_student_gradients(name, small_data):
    student, teacher = tiny(4), tiny(8, seed=1)
    objective = DistillObjective(
        student, [teacher], [LossSpec(name=name)], TASK, 10, small_data.example_input(2)
    )
    images, targets = next(iter(small_data.train_loader(16, augment=False, seed=0)))
    loss, terms = objective(images, targets)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and set(terms) == {name}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    objective.close()


def test_kd_is_zero_for_identical_logits_and_scales_with_t_squared():
    logits = torch.randn(8, 10)
    assert float(soft_kl(logits, logits.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    p_t = torch.softmax(t / 2.0, 1)
    manual = (p_t * (p_t.log() - torch.log_softmax(s / 2.0, 1))).sum(1).mean() * 4.0
    assert float(soft_kl(s, t, 2.0)) == pytest.approx(float(manual), rel=1e-5)


def test_hook_names_are_validated_with_a_suggestion():
    with pytest.raises(InputError, match="did you mean 'layer2'"):
        FeatureHooks(tiny(), ["layer_2"])


def test_distill_run_keeps_the_best_epoch_and_leaves_the_teacher_untouched(small_data):
    teacher, student = tiny(8, seed=1), tiny(4)
    before = copy.deepcopy(teacher.state_dict())
    cfg = DistillConfig(epochs=2, lr=0.05)
    ctx = run_context(small_data, [teacher], distill=cfg, data=DataConfig(batch_size=128))
    result = distill.train_student(ctx, student)
    assert [h.epoch for h in result.history] == [1, 2]
    # the student holds the kept weights: re-evaluated on the validation split, it scores the recorded best
    measured = evaluate_model(student, small_data.val_loader(512), TASK)
    assert measured == pytest.approx(result.metrics, abs=1e-6)
    kept = result.metrics["accuracy"]  # the best of epochs 0 (the incoming weights), 1 and 2
    assert kept >= max(h.metrics["accuracy"] for h in result.history)
    assert set(result.history[0].loss_terms) == {"ce", "kd"}
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_resumed_training_matches_an_uninterrupted_run(small_data, tmp_path):
    """A run stopped mid-epoch 2 and resumed from its epoch-1 checkpoint ends bit-identical on CPU."""
    criterion = TASK.criterion()

    class Killed(Exception):
        pass

    def train(checkpoint, resume: bool, die_at_step: int | None = None):
        model = tiny(4)
        steps = 0

        def loss_fn(x, y):
            nonlocal steps
            steps += 1
            if steps == die_at_step:
                raise Killed
            return criterion(model(x), y), {}

        opts = FitOptions(
            optim=DistillConfig(epochs=2, lr=0.05),
            batch_size=128,
            augment=True,
            seed=0,
            checkpoint=checkpoint,
            resume=resume,
        )
        fit(model, small_data, TASK, loss_fn, opts)
        return model

    straight = train(tmp_path / "a.pt", resume=False)
    batches_per_epoch = len(small_data.train_loader(128, augment=True, seed=0))
    with pytest.raises(Killed):
        train(tmp_path / "b.pt", resume=False, die_at_step=batches_per_epoch + 3)
    resumed = train(tmp_path / "b.pt", resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
