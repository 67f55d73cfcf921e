"""The validation split (``data.val``): carved from training data, the only split anything is selected on."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from edgekd.data import build_data
from edgekd.data.validation import carve_validation, validation_size
from edgekd.engine.evaluate import evaluate_model
from edgekd.engine.trainer import FitOptions, fit
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.recipe.schema import VAL_FRACTION_CAP, DataConfig, DistillConfig, ModelSpec
from edgekd.tasks import get_task
from tests.conftest import QUICKSTART, SMALL_KD_RUN, cli, one_line_error, sets

TASK = get_task("classification")


@pytest.fixture(scope="module")
def unsplit():
    return build_data(DataConfig(train_limit=600, eval_limit=200, val=0))


def _rows(split) -> set[bytes]:
    return {bytes(row) for row in split.images.flatten(1).numpy()}


def test_sizes_fraction_capped_count_and_none():
    assert validation_size(0.1, 60_000) == VAL_FRACTION_CAP  # 6000 capped
    assert validation_size(0.1, 512) == 51
    assert validation_size(300, 512) == 300
    assert validation_size(0, 512) == validation_size(None, 512) == 0
    with pytest.raises(InputError, match="leaving none to train on"):
        validation_size(512, 512)


def test_carving_partitions_the_training_split_and_follows_the_seed(unsplit):
    a = carve_validation(unsplit, 0.25, seed=3)
    assert a.val is not None and len(a.val) == 150 and len(a.train) == 450
    assert _rows(a.train) | _rows(a.val) == _rows(unsplit.train)
    assert not _rows(a.train) & _rows(a.val)
    again, other = carve_validation(unsplit, 0.25, seed=3), carve_validation(unsplit, 0.25, seed=4)
    assert torch.equal(again.val.images, a.val.images)
    assert not torch.equal(other.val.images, a.val.images)
    assert torch.equal(a.eval.images, unsplit.eval.images)  # the test split is never touched


def test_val_seed_fixes_the_carve_across_run_seeds():
    def carved(seed: int, val_seed: int | None) -> torch.Tensor:
        return build_data(
            DataConfig(train_limit=600, eval_limit=50, val=100, val_seed=val_seed), seed
        ).val.images

    assert torch.equal(carved(0, val_seed=7), carved(1, val_seed=7))
    assert torch.equal(carved(7, val_seed=None), carved(0, val_seed=7))  # the same carve as a run with seed 7
    assert not torch.equal(carved(0, val_seed=None), carved(1, val_seed=None))


def test_recipe_values_are_checked_at_load():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        DataConfig(val=1.5)
    with pytest.raises(ValueError, match="count must be >= 0"):
        DataConfig(val=-3)
    with pytest.raises(InputError, match="names a directory, which only folder datasets read"):
        build_data(DataConfig(val="holdout", train_limit=64, eval_limit=64))


def _fit(data, epochs: int = 2):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet20", args={"width": 4}), 10, 1)
    criterion = torch.nn.CrossEntropyLoss()
    options = FitOptions(optim=DistillConfig(epochs=epochs, lr=0.05), batch_size=64, augment=False, seed=0)
    result = fit(model, data, TASK, lambda x, y: (criterion(model(x), y), {}), options)
    return model, result


def test_training_selects_on_validation_and_never_evaluates_the_test_split(unsplit):
    data = carve_validation(unsplit, 0.2, seed=0)
    # a test split the model cannot even run on (3 channels for a 1-channel model): evaluating it would raise
    unusable = dataclasses.replace(data.eval, images=data.eval.images.expand(-1, 3, -1, -1).contiguous())
    model, result = _fit(dataclasses.replace(data, eval=unusable), epochs=3)
    by_epoch = {entry.epoch: entry.metrics for entry in result.history}
    assert set(by_epoch) == {1, 2, 3} and all(set(m) == {"accuracy", "top5"} for m in by_epoch.values())
    if result.best_epoch:  # the kept epoch is the best on validation, and its metrics are what is reported
        assert result.metrics == by_epoch[result.best_epoch]
        assert result.metrics["accuracy"] == max(m["accuracy"] for m in by_epoch.values())
    kept = evaluate_model(model, data.val_loader(256), TASK)
    assert kept == pytest.approx(result.metrics, abs=1e-12)


def test_without_a_validation_split_the_last_epoch_is_kept(unsplit):
    model, result = _fit(unsplit, epochs=2)
    assert result.best_epoch == 2 and result.metrics == {}
    assert all(entry.metrics == {} for entry in result.history)


def test_report_states_validation_and_test_metrics_apart(tmp_path):
    out = tmp_path / "run"
    proc = cli("compress", str(QUICKSTART), "--out", str(out), *SMALL_KD_RUN, *sets("data.val=100"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["data"]["val"] == 100 and report["stages"]["data"]["train"] == 412
    for role in ("teacher", "student"):
        model = report["models"][role]
        assert set(model["val_metrics"]) == set(model["metrics"]) == {"accuracy", "top5"}
    assert report["distillation"]["metrics"] == report["models"]["student"]["val_metrics"] or (
        report["distillation"]["best_epoch"] == 0
    )
    markdown = (out / "report.md").read_text()
    assert "(validation, PyTorch)" in markdown and "(test, PyTorch)" in markdown
    assert "selected on the validation split" in markdown


def test_a_validation_count_that_leaves_nothing_to_train_on_is_one_line(tmp_path):
    proc = cli(
        "prune",
        str(QUICKSTART),
        "--out",
        str(tmp_path / "r"),
        *SMALL_KD_RUN,
        *sets("data.val=512"),
    )
    assert "data.val: 512 sets aside 512 of 512 training samples" in one_line_error(proc)
