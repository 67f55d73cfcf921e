"""Recipe loading: every mistake is one line naming the key, the value and the fix; --set overrides apply."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekd.errors import InputError
from edgekd.recipe import apply_overrides
from edgekd.run import load_recipe, recipe_from_dict
from tests.conftest import QUICKSTART, REPO

MINIMAL = "teacher:\n  model: {name: resnet20}\n"


def error_of(write_recipe, text: str, overrides=()) -> str:
    with pytest.raises(InputError) as info:
        load_recipe(write_recipe(text), overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_quickstart_loads_with_defaults_filled():
    recipe = load_recipe(QUICKSTART)
    assert recipe.prune.target == "macs" and recipe.prune.reduction == 0.75
    assert recipe.teacher.checkpoint.is_absolute() and recipe.teacher.checkpoint.name == "fmnist_resnet20.pt"
    assert recipe.export.opset >= 17 and recipe.profile.threads == [1, 0]


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "recipes").rglob("*.yaml")),
    ids=lambda p: str(p.relative_to(REPO / "recipes")),
)
def test_every_shipped_recipe_loads_and_its_checkpoints_exist(path):
    """A recipe in the repository that no longer loads (a renamed key, a moved checkpoint) fails here, not in
    front of the user who copies it. Checkpoints a documented command writes first (under runs/) are not
    shipped; the ones under recipes/ are."""
    recipe = load_recipe(path)
    teachers = [recipe.teacher, *getattr(recipe.distill, "extra_teachers", [])]
    shipped = [
        t.checkpoint
        for t in teachers
        if t.checkpoint and (REPO / "recipes") in t.checkpoint.resolve().parents
    ]
    assert all(checkpoint.is_file() for checkpoint in shipped), shipped


def test_unknown_key_suggests_the_nearest(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "prune: {importnce: group_l2}\n")
    assert "prune.importnce" in msg and "did you mean 'importance'" in msg


def test_unknown_section_suggests(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "distil: {epochs: 1}\n")
    assert "distil" in msg and "did you mean 'distill'" in msg


def test_out_of_range_ratio_names_key_and_value(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "prune: {reduction: 1.5}\n")
    assert "prune.reduction" in msg and "1.5" in msg


def test_wrong_type(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "distill: {epochs: many}\n")
    assert "distill.epochs" in msg and "'many'" in msg


def test_malformed_yaml_gives_line_and_column(write_recipe):
    msg = error_of(write_recipe, "teacher:\n  model: {name: resnet20\n")
    assert "malformed YAML" in msg and "line" in msg and "column" in msg


def test_unknown_registered_names_are_caught_at_load(write_recipe):
    assert "did you mean 'group_l2'" in error_of(write_recipe, MINIMAL + "prune: {importance: group_l3}\n")
    assert "did you mean 'resnet20'" in error_of(write_recipe, "teacher: {model: {name: resnet21}}\n")
    assert "did you mean 'kd'" in error_of(write_recipe, MINIMAL + "distill: {losses: [{name: kdd}]}\n")
    assert "did you mean 'local'" in error_of(write_recipe, MINIMAL + "profile: {targets: [lokal]}\n")


def test_dataset_options_are_validated_at_load(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "data: {name: synth_eyes, augment: false, args: {sise: 32}}\n")
    assert "recipe.yaml: data.args.sise:" in msg and "did you mean 'size'" in msg


def test_loss_parameters_are_validated_at_load(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "distill: {losses: [{name: kd, temprature: 2}]}\n")
    assert "distill.losses.0" in msg and "did you mean 'temperature'" in msg


def test_dense_loss_is_refused_for_a_classification_task(write_recipe):
    msg = error_of(write_recipe, MINIMAL + "distill: {losses: [{name: cwd}]}\n")
    assert "distill.losses.0.name" in msg and "task: segmentation" in msg


def test_missing_recipe_file(tmp_path):
    with pytest.raises(InputError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_rightmost_wins_and_index_lists():
    recipe = load_recipe(
        QUICKSTART,
        [
            "prune.reduction=0.5",
            "prune.reduction=0.6",
            "distill.losses.0.weight=0.7",
            "profile.threads=[2]",
        ],
    )
    assert recipe.prune.reduction == 0.6
    assert recipe.distill.losses[0].weight == 0.7
    assert recipe.profile.threads == [2]


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", "distill.losses.9.weight=1"])
def test_bad_override_syntax(bad):
    with pytest.raises(InputError, match="--set"):
        load_recipe(QUICKSTART, [bad])


def test_resolved_recipe_round_trips():
    recipe = load_recipe(QUICKSTART)
    again = recipe_from_dict(yaml.safe_load(yaml.safe_dump(recipe.to_yaml_dict())))
    assert again == recipe


# Property-based: arbitrary YAML-ish input and overrides never escape as anything but a Recipe or InputError.
yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
keys = st.sampled_from(["task", "seed", "data", "teacher", "prune", "distill", "export", "profile", "report"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, yaml_values, max_size=5))
def test_any_mapping_gives_recipe_or_clean_error(data):
    try:
        recipe_from_dict(data)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_any_override_gives_recipe_or_clean_error(overrides):
    try:
        load_recipe(QUICKSTART, overrides)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_file_gives_recipe_or_clean_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(text)
    try:
        load_recipe(path)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_apply_overrides_does_not_mutate_input():
    data = {"prune": {"reduction": 0.5}}
    apply_overrides(data, ["prune.reduction=0.7"])
    assert data == {"prune": {"reduction": 0.5}}
