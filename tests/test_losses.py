"""The distillation-loss library: every registered loss on tiny tensors, hand-computed values, and one CLI run.

The generic tests run over the registry with one small case per loss (``CASES``), so a new loss must add its
case. A teacher's tensors are created with ``requires_grad=True`` on purpose: a loss must never send gradient
into a teacher, even one that is not frozen.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics

import pytest
import torch

from edgekd.distill import LOSSES, DistillBatch, DistillObjective, LossContext
from edgekd.distill.losses._dense import boundary_band
from edgekd.distill.losses.dkd import dkd_terms
from edgekd.distill.params import parse_loss_params
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.recipe.schema import LossSpec, ModelSpec
from edgekd.tasks import get_task
from tests.conftest import QUICKSTART, SMALL_KD_RUN, SMALL_RUN, TEACHER, cli, sets

TASK = get_task("classification")
N, C = 6, 5  # batch, classes of the logit cases
DENSE = (2, 3, 6, 6)  # N×C×H×W of the dense cases
FEATURE_LOSSES = ("fitnet", "at", "channel_corr")

# Parameters of each loss for the generic tests; feature losses hook the module named "f".
CASES: dict[str, dict] = {
    "ce": {},
    "kd": {},
    "dkd": {},
    "dist": {},
    "kd_corrected": {"confidence_threshold": 0.5},
    "multi_teacher": {},
    "fitnet": {"student": "f"},
    "at": {"student": "f"},
    "channel_corr": {"student": "f"},
    "pixel_kd": {},
    "cwd": {},
    "boundary_kd": {},
    "reg_kd": {},
}


def scalar(loss: torch.Tensor) -> float:
    return loss.item()


def softmax(xs: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def build(name: str, s_channels: int = 4, size: tuple[int, int] = (4, 4), **params):
    """The loss ``name`` with ``CASES`` params (+ overrides); teacher features are 4×4×4, the student's given."""
    spec = LossSpec(name=name, **{**CASES[name], **params})
    s_shape, t_shape = torch.Size((2, s_channels, *size)), torch.Size((2, 4, 4, 4))
    ctx = LossContext(TASK, C, student_shapes={"f": s_shape}, teacher_shapes={"f": t_shape})
    return LOSSES.get(name)(parse_loss_params(spec), ctx)


def case_batch(name: str, same: bool, s_channels: int = 4, size: tuple[int, int] = (4, 4), epoch: int = 0):
    """A batch for ``name``: student equal to the teacher (``same``) or not; teacher tensors require grad."""
    torch.manual_seed(0)
    dense = getattr(LOSSES.get(name), "dense", False)
    shape = DENSE if dense else (N, C)
    teacher = (torch.randn(shape) * 3).requires_grad_()
    student = teacher.detach().clone() if same else torch.randn(shape)
    targets = teacher.detach().argmax(1)
    if dense:
        targets[0, 0, :2] = 255  # a few ignored pixels
    elif not same:
        targets[:2] = (targets[:2] + 1) % C  # the teacher gets two samples wrong
    t_feat = torch.randn(N, 4, 4, 4).relu().requires_grad_()
    s_feat = t_feat.detach().clone() if same else torch.randn(N, s_channels, *size).relu()
    return DistillBatch(
        student=student.requires_grad_(),
        teachers=[teacher],
        targets=targets,
        student_features={"f": s_feat.requires_grad_()},
        teacher_features=[{"f": t_feat}],
        epoch=epoch,
    )


def test_every_registered_loss_has_a_test_case():
    assert set(LOSSES.names()) == set(CASES)


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if n != "ce"])
def test_loss_is_zero_when_the_student_equals_the_teacher(name):
    loss = build(name)(case_batch(name, same=True))
    assert scalar(loss) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradient_reaches_the_student_and_its_adaptors_but_never_a_teacher(name):
    loss_fn = build(name, s_channels=2)  # a pruned student: fewer channels than the teacher's 4
    batch = case_batch(name, same=False, s_channels=2)
    loss = loss_fn(batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and scalar(loss) > 0
    student_grads = [batch.student_features["f"].grad] if name in FEATURE_LOSSES else []
    if name not in ("fitnet", "at"):  # every loss but the pure feature ones reads the logits
        student_grads.append(batch.student.grad)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in student_grads)
    assert batch.teacher.grad is None and batch.teacher_features[0]["f"].grad is None
    for p_name, param in loss_fn.named_parameters():  # adaptors (fitnet, channel_corr)
        assert param.grad is not None and param.grad.abs().sum() > 0, p_name


@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_pruned_student_features_fewer_channels_and_smaller_maps_are_handled(name):
    loss_fn = build(name, s_channels=2, size=(2, 2))
    batch = case_batch(name, same=False, s_channels=2, size=(2, 2))
    params = [batch.student_features["f"], *loss_fn.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.05)
    first = scalar(loss_fn(batch))
    for _ in range(30):  # the student side (features + adaptor) can reduce the loss
        optimizer.zero_grad()
        loss_fn(batch).backward()
        optimizer.step()
    assert math.isfinite(first) and scalar(loss_fn(batch)) < first
    if name != "at":  # attention averages channels away: no adaptor needed
        assert loss_fn.adaptors[0].conv.weight.shape == (4, 2, 1, 1)


def test_adaptors_train_with_the_objective_and_stay_out_of_the_student(small_data):
    def tiny(width: int, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(ModelSpec(name="resnet20", args={"width": width}), 10, 1)

    student, teacher = tiny(4, 0), tiny(8, 1)
    keys = set(student.state_dict())
    specs = [LossSpec(name="fitnet", student=["layer2", "layer3"]), LossSpec(name="channel_corr")]
    objective = DistillObjective(student, [teacher], specs, TASK, 10, small_data.example_input(2))
    images, targets = next(iter(small_data.train_loader(16, augment=False, seed=0)))
    loss, terms = objective(images, targets)
    loss.backward()
    assert set(terms) == {"fitnet", "channel_corr"}
    adaptor_shapes = [a.conv.weight.shape for a in objective.losses["fitnet"].adaptors]
    assert adaptor_shapes == [(16, 8, 1, 1), (32, 16, 1, 1)]  # width 4 → 8: stage 2 and 3 channels
    assert all(p.grad is not None for p in objective.losses.parameters())
    assert set(student.state_dict()) == keys  # adaptors never join the student
    assert all(p.grad is None for p in teacher.parameters())
    objective.close()


# --- hand-computed values -----------------------------------------------------------------------------------


def batch_of(student, teacher, targets, epoch: int = 0, teachers=None) -> DistillBatch:
    s, t = torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32)
    extra = [torch.tensor(x, dtype=torch.float32) for x in teachers or []]
    return DistillBatch(student=s, teachers=[t, *extra], targets=torch.tensor(targets), epoch=epoch)


def loss_of(name: str, batch: DistillBatch, **params) -> float:
    ctx = LossContext(TASK, batch.student.shape[1])
    return scalar(LOSSES.get(name)(parse_loss_params(LossSpec(name=name, **params)), ctx)(batch))


def test_dkd_matches_a_hand_computed_value_and_decomposes_kd():
    s, t, y, temp = [1.0, 2.0, 0.0], [3.0, 1.0, 0.0], 0, 2.0
    p_s, p_t = softmax(s, temp), softmax(t, temp)
    tckd = kl([p_t[0], 1 - p_t[0]], [p_s[0], 1 - p_s[0]]) * temp**2
    nckd = kl(softmax(t[1:], temp), softmax(s[1:], temp)) * temp**2
    batch = batch_of([s], [t], [y])
    assert loss_of("dkd", batch, alpha=1.0, beta=8.0, temperature=temp, warmup=0) == pytest.approx(
        tckd + 8 * nckd, rel=1e-5
    )
    # DKD's identity: KD = TCKD + (1 − p_t[target]) · NCKD
    kd = kl(p_t, p_s) * temp**2
    got_t, got_n = dkd_terms(batch.student, batch.teacher, batch.targets, temp)
    assert scalar(got_t + (1 - p_t[0]) * got_n) == pytest.approx(kd, rel=1e-5)
    # linear warm-up over 4 epochs; epoch 0 (outside training) counts as the first
    for epoch, ramp in [(0, 0.25), (1, 0.25), (3, 0.75), (5, 1.0)]:
        warm = batch_of([s], [t], [y], epoch=epoch)
        got = loss_of("dkd", warm, warmup=4, temperature=temp)
        assert got == pytest.approx(ramp * (tckd + 8 * nckd), rel=1e-5)


def test_dist_matches_pearson_correlations_computed_by_hand():
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0]]
    t = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 2.0]]
    y_s, y_t = [softmax(r) for r in s], [softmax(r) for r in t]
    inter = 1 - statistics.fmean(statistics.correlation(a, b) for a, b in zip(y_s, y_t, strict=True))
    cols = range(3)
    intra = 1 - statistics.fmean(
        statistics.correlation([r[j] for r in y_s], [r[j] for r in y_t]) for j in cols
    )
    got = loss_of("dist", batch_of(s, t, [0, 1, 2]), beta=2.0, gamma=0.5)
    assert got == pytest.approx(2.0 * inter + 0.5 * intra, rel=1e-5)


def test_kd_corrected_swap_label_and_confidence_modes_by_hand():
    s, temp = [0.5, 0.0, 1.0], 2.0
    t_wrong, y = [2.0, 0.0, 1.0], 1  # teacher says class 0, label is 1
    p_s = softmax(s, temp)
    swapped = kl(softmax([0.0, 2.0, 1.0], temp), p_s) * temp**2  # logits of classes 0 and 1 exchanged
    assert loss_of("kd_corrected", batch_of([s], [t_wrong], [y]), temperature=temp) == pytest.approx(
        swapped, rel=1e-5
    )
    label = -math.log(p_s[y]) * temp**2
    got = loss_of("kd_corrected", batch_of([s], [t_wrong], [y]), temperature=temp, mode="label")
    assert got == pytest.approx(label, rel=1e-5)
    # a right teacher is left alone: plain KD
    t_right = [0.0, 2.0, 1.0]
    plain = kl(softmax(t_right, temp), p_s) * temp**2
    assert loss_of("kd_corrected", batch_of([s], [t_right], [y]), temperature=temp) == pytest.approx(
        plain, rel=1e-5
    )
    # a confident, right teacher (p_max ≈ 0.9995) adds the renormalised non-target KL
    t_conf = [0.0, 8.0, 0.0]
    kd = kl(softmax(t_conf, temp), p_s) * temp**2
    nckd = kl(softmax([0.0, 0.0], temp), softmax([0.5, 1.0], temp)) * temp**2
    got = loss_of(
        "kd_corrected",
        batch_of([s], [t_conf], [y]),
        temperature=temp,
        confidence_threshold=0.99,
        confidence_weight=3.0,
    )
    assert got == pytest.approx(kd + 3.0 * nckd, rel=1e-5)
    unconfident = loss_of(
        "kd_corrected", batch_of([s], [t_right], [y]), temperature=temp, confidence_threshold=0.99
    )
    assert unconfident == pytest.approx(plain, rel=1e-5)


def test_multi_teacher_weights_teachers_by_their_label_cross_entropy():
    s, t1, t2, y = [0.0, 1.0], [2.0, 0.0], [0.0, 3.0], 1  # teacher 1 is wrong, teacher 2 right
    ce = [-math.log(softmax(t1)[y]), -math.log(softmax(t2)[y])]
    w = softmax([-ce[0], -ce[1]])
    p_s = softmax(s, 4.0)
    expected = (w[0] * kl(softmax(t1, 4.0), p_s) + w[1] * kl(softmax(t2, 4.0), p_s)) * 16
    got = loss_of("multi_teacher", batch_of([s], [t1], [y], teachers=[[t2]]))
    assert got == pytest.approx(expected, rel=1e-5)
    single = loss_of("multi_teacher", batch_of([s], [t1], [y]))  # one teacher: exactly kd
    assert single == pytest.approx(loss_of("kd", batch_of([s], [t1], [y])), rel=1e-6)


def test_dense_multi_teacher_weighs_teachers_per_pixel_and_boundaries_by_hand():
    # 1×2×1×3: two classes, three pixels. Teacher 1 is right on pixel 0, teacher 2 on pixel 1; pixel 2 ignored.
    s = torch.tensor([[[[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]])
    t1 = torch.tensor([[[[3.0, 2.0, 0.0]], [[0.0, 0.0, 0.0]]]])
    t2 = torch.tensor([[[[0.0, 0.0, 1.0]], [[2.0, 3.0, 0.0]]]])
    labels = torch.tensor([[[0, 1, 255]]])
    batch = DistillBatch(student=s, teachers=[t1, t2], targets=labels)

    def logits(x, i):
        return [x[0, 0, 0, i].item(), x[0, 1, 0, i].item()]

    per_pixel = []
    for i, y in enumerate([0, 1]):
        ce = [-math.log(softmax(logits(t, i))[y]) for t in (t1, t2)]
        w = softmax([-ce[0], -ce[1]])
        p_s = softmax(logits(s, i))
        per_pixel.append(sum(w[k] * kl(softmax(logits(t, i)), p_s) for k, t in enumerate((t1, t2))))
    assert per_pixel[0] > 0 and per_pixel[1] > 0
    got = loss_of("multi_teacher", batch, temperature=1.0)
    assert got == pytest.approx(statistics.fmean(per_pixel), rel=1e-5)  # the ignored pixel counts nowhere
    # band 1 around the 0|1 label boundary covers pixels 0 and 1 (and 2, which stays ignored): equal weights
    weighted = loss_of("multi_teacher", batch, temperature=1.0, band=1, boundary_weight=4.0)
    assert weighted == pytest.approx(statistics.fmean(per_pixel), rel=1e-5)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pixel_kd", {"temperature": 2.0}),
        ("boundary_kd", {"temperature": 2.0, "band": 1, "boundary_weight": 4.0}),
    ],
)
def test_dense_multi_teacher_with_one_teacher_is_exactly_the_single_teacher_loss(name, params):
    batch = case_batch("pixel_kd", same=False)  # random dense logits with a few ignored pixels
    got = loss_of("multi_teacher", batch, **params)
    assert got == pytest.approx(loss_of(name, batch, **params), rel=1e-6) and got > 0


def feature_batch(s_feat: torch.Tensor, t_feat: torch.Tensor, logits=None, targets=None, epoch=0):
    n = s_feat.shape[0]
    logits = torch.zeros(n, 2) if logits is None else logits
    return DistillBatch(
        student=logits.clone(),
        teachers=[logits.clone()],
        targets=torch.zeros(n, dtype=torch.long) if targets is None else targets,
        student_features={"f": s_feat},
        teacher_features=[{"f": t_feat}],
        epoch=epoch,
    )


def feature_loss(name: str, s_feat, t_feat, **params):
    ctx = LossContext(TASK, 2, student_shapes={"f": s_feat.shape}, teacher_shapes={"f": t_feat.shape})
    return LOSSES.get(name)(parse_loss_params(LossSpec(name=name, student="f", **params)), ctx)


def test_fitnet_is_the_mean_squared_error_through_the_adaptor_by_hand():
    s = torch.tensor([[[[1.0, 2.0]], [[0.0, -1.0]]]])  # 1×2×1×2
    t = torch.tensor([[[[3.0, 1.0]]]])  # 1×1×1×2: the teacher has 1 channel, the student 2
    loss_fn = feature_loss("fitnet", s, t).eval()  # eval: BN uses its initial running stats (0, 1)
    with torch.no_grad():
        loss_fn.adaptors[0].conv.weight.copy_(torch.tensor([0.5, 2.0]).view(1, 2, 1, 1))
    scale = 1 / math.sqrt(1 + 1e-5)
    adapted = [(0.5 * 1.0 + 2.0 * 0.0) * scale, (0.5 * 2.0 + 2.0 * -1.0) * scale]
    expected = ((adapted[0] - 3.0) ** 2 + (adapted[1] - 1.0) ** 2) / 2
    assert scalar(loss_fn(feature_batch(s, t))) == pytest.approx(expected, rel=1e-5)
    same = torch.tensor([[[[1.0, 2.0]]]])  # equal channel counts: compared directly, no adaptor
    assert scalar(feature_loss("fitnet", same, t)(feature_batch(same, t))) == pytest.approx(2.5)


def test_attention_transfer_by_hand():
    s = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # mean_c A²: [5, 2]
    t = torch.tensor([[[[1.0, 1.0]]]])  # [1, 1]
    q_s = [5 / math.sqrt(29), 2 / math.sqrt(29)]
    q_t = [1 / math.sqrt(2), 1 / math.sqrt(2)]
    expected = ((q_s[0] - q_t[0]) ** 2 + (q_s[1] - q_t[1]) ** 2) / 2
    assert scalar(feature_loss("at", s, t)(feature_batch(s, t))) == pytest.approx(expected, rel=1e-5)
    cubes = [(1 + 27) / 2, 8 / 2]  # p = 3
    q3 = [v / math.hypot(*cubes) for v in cubes]
    expected3 = ((q3[0] - q_t[0]) ** 2 + (q3[1] - q_t[1]) ** 2) / 2
    assert scalar(feature_loss("at", s, t, p=3)(feature_batch(s, t))) == pytest.approx(expected3, rel=1e-5)


def test_channel_corr_terms_by_hand():
    d_s = [[1.0, 0.0], [2.0, 1.0], [4.0, 0.5]]  # N=3 samples × C=2 channels (1×1 maps)
    d_t = [[1.0, 1.0], [2.0, 0.0], [3.0, 2.0]]
    s = torch.tensor(d_s)[:, :, None, None]
    t = torch.tensor(d_t)[:, :, None, None]
    channel = statistics.fmean(
        (a - b) ** 2 for rs, rt in zip(d_s, d_t, strict=True) for a, b in zip(rs, rt, strict=True)
    )

    def corr(d):
        cols = [[r[0] for r in d], [r[1] for r in d]]
        off = statistics.correlation(cols[0], cols[1])
        return [1.0, off, off, 1.0]

    relation = statistics.fmean((a - b) ** 2 for a, b in zip(corr(d_s), corr(d_t), strict=True))
    loss_fn = feature_loss("channel_corr", s, t, logit_weight=0.0, channel_weight=2.0, relation_weight=3.0)
    assert scalar(loss_fn(feature_batch(s, t))) == pytest.approx(2 * channel + 3 * relation, rel=1e-5)


def test_channel_corr_fades_supervision_on_the_teachers_mistakes_over_epochs():
    feats = torch.ones(2, 1, 1, 1)
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([0, 1])  # right on sample 0, wrong on sample 1
    per_sample = kl(softmax([2.0, 0.0], 4.0), [0.5, 0.5]) * 16
    loss_fn = feature_loss("channel_corr", feats, feats, wrong_decay=0.5, decay_every=1)
    for epoch, wrong_weight in [(0, 1.0), (1, 0.5), (3, 0.125)]:
        batch = feature_batch(feats, feats, student, targets, epoch)
        batch.teachers = [teacher]
        assert scalar(loss_fn(batch)) == pytest.approx(per_sample * (1 + wrong_weight) / 2, rel=1e-5)


def dense_batch(student, teacher, labels) -> DistillBatch:
    return DistillBatch(student=student, teachers=[teacher], targets=labels)


def test_pixel_kd_averages_the_per_pixel_kl_over_labelled_pixels():
    s = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # 1×2×1×2: two classes, two pixels
    t = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])
    labels = torch.tensor([[[0, 255]]])  # the second pixel is ignored
    expected = kl(softmax([2.0, 0.0], 2.0), softmax([0.0, 1.0], 2.0)) * 4
    got = loss_of("pixel_kd", dense_batch(s, t, labels), temperature=2.0)
    assert got == pytest.approx(expected, rel=1e-5)


def test_cwd_compares_per_channel_spatial_distributions_by_hand():
    s = torch.tensor([[[[0.0, 1.0, 2.0]], [[1.0, 1.0, 0.0]]]])  # 1×2×1×3
    t = torch.tensor([[[[2.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]])
    tau = 2.0
    per_channel = [
        kl(softmax([2.0, 0.0, 0.0], tau), softmax([0.0, 1.0, 2.0], tau)),
        kl(softmax([0.0, 1.0, 0.0], tau), softmax([1.0, 1.0, 0.0], tau)),
    ]
    got = loss_of("cwd", dense_batch(s, t, torch.zeros(1, 1, 3, dtype=torch.long)), temperature=tau)
    assert got == pytest.approx(tau**2 * statistics.fmean(per_channel), rel=1e-5)


def test_boundary_band_marks_pixels_within_band_of_another_class():
    labels = torch.tensor([[[0, 0, 0, 1, 1, 1]]])
    assert boundary_band(labels, 1).int().tolist() == [[[0, 0, 1, 1, 0, 0]]]
    assert boundary_band(labels, 2).int().tolist() == [[[0, 1, 1, 1, 1, 0]]]
    assert not boundary_band(
        torch.zeros(1, 3, 3, dtype=torch.long), 1
    ).any()  # image borders are not boundaries


def test_boundary_kd_weights_band_pixels_by_hand():
    s = torch.tensor([[[[0.0, 1.0, 0.0, 2.0]], [[0.0, 0.0, 1.0, 0.0]]]])  # 1×2×1×4
    t = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 2.0, 1.0]]]])
    labels = torch.tensor([[[0, 0, 1, 1]]])  # band=1: pixels 1 and 2 are in the band
    kls = [
        kl(softmax([t[0, 0, 0, i], t[0, 1, 0, i]]), softmax([s[0, 0, 0, i], s[0, 1, 0, i]])) for i in range(4)
    ]
    w = [1.0, 5.0, 5.0, 1.0]
    expected = sum(a * b for a, b in zip(w, kls, strict=True)) / sum(w)
    got = loss_of("boundary_kd", dense_batch(s, t, labels), band=1, boundary_weight=4.0)
    assert got == pytest.approx(expected, rel=1e-5)
    from_teacher = loss_of(  # teacher argmax is [0, 0, 1, 1] too
        "boundary_kd", dense_batch(s, t, torch.zeros(1, dtype=torch.long)), band=1, boundary_from="teacher"
    )
    assert from_teacher == pytest.approx(expected, rel=1e-5)


# --- schedules and validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kd", "dkd", "fitnet", "boundary_kd"])
def test_epoch_window_idles_a_term_outside_it_and_still_backpropagates(name):
    loss_fn = build(name, until_epoch=2)
    inside = loss_fn(case_batch(name, same=False, epoch=2))
    outside_batch = case_batch(name, same=False, epoch=3)
    outside = loss_fn(outside_batch)
    assert scalar(inside) > 0 and scalar(outside) == 0.0
    outside.backward()
    assert outside_batch.student.grad is not None and not outside_batch.student.grad.any()
    late = build(name, from_epoch=3)
    assert scalar(late(case_batch(name, same=False, epoch=2))) == 0.0
    assert scalar(late(case_batch(name, same=False, epoch=3))) > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LossSpec(name="kd", from_epoch=3, until_epoch=2), "until_epoch: must be >= from_epoch"),
        (LossSpec(name="fitnet", student=["layer1", "layer2"], teacher="layer2"), "teacher: list as many"),
        (LossSpec(name="dkd", alpah=1.0), "did you mean 'alpha'"),
        (LossSpec(name="kd_corrected", mode="flip"), "mode"),
        (LossSpec(name="at", p=0.5), "p:"),
    ],
)
def test_bad_loss_params_are_refused_with_the_key(spec, message):
    with pytest.raises(InputError, match=message):
        parse_loss_params(spec)


@pytest.mark.parametrize("name", ["pixel_kd", "cwd", "boundary_kd"])
def test_dense_losses_refuse_class_logits(name):
    batch = batch_of([[0.0, 1.0]], [[1.0, 0.0]], [0])
    with pytest.raises(InputError, match="N×C×H×W"):
        loss_of(name, batch)


def test_class_logit_losses_refuse_dense_predictions():
    batch = dense_batch(
        torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long)
    )
    with pytest.raises(InputError, match="pixel_kd, cwd, boundary_kd or multi_teacher"):
        loss_of("dkd", batch)


# --- end to end through the real CLI --------------------------------------------------------------------------

# With the small run (tests.conftest.SMALL_RUN): the tests read report.json only.
JSON_REPORT = sets("report.formats=[json]")


def test_compress_with_ce_kd_and_fitnet_runs_end_to_end(tmp_path):
    losses = (
        "distill.losses=[{name: ce, weight: 0.3}, {name: kd, weight: 0.7},"
        " {name: fitnet, weight: 1.0, student: layer2, teacher: layer2}]"
    )
    proc = cli(
        "compress",
        str(QUICKSTART),
        "--out",
        str(tmp_path / "run"),
        *SMALL_KD_RUN,
        *JSON_REPORT,
        "--set",
        losses,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    history = report["distillation"]["history"]
    assert set(history[0]["loss_terms"]) == {"ce", "kd", "fitnet"}
    assert all(math.isfinite(v) and v > 0 for v in history[0]["loss_terms"].values())
    assert [s["name"] for s in report["recipe"]["distill"]["losses"]] == ["ce", "kd", "fitnet"]
    student = {a["name"]: a for a in report["artifacts"]}["student.onnx"]
    assert student["parity"]["passed"]  # the adaptor did not leak into the exported student
    assert report["models"]["student"]["params"] == report["pruning"]["params_after"]


def test_multi_teacher_recipe_with_an_extra_checkpoint_runs_end_to_end(tmp_path):
    """distill.extra_teachers: a second checkpoint (path relative to the recipe) teaches beside the original."""
    (tmp_path / "recipes").mkdir()
    shutil.copy(TEACHER, tmp_path / "recipes" / "second.pt")

    def recipe(checkpoint: str) -> str:
        path = tmp_path / "recipes" / f"{checkpoint}.yaml"
        path.write_text(
            f"teacher: {{model: {{name: resnet20}}, checkpoint: {TEACHER}}}\n"
            f"distill:\n  epochs: 1\n  extra_teachers: [{{model: {{name: resnet20}}, checkpoint: {checkpoint}}}]\n"
            "  losses: [{name: ce, weight: 0.5}, {name: multi_teacher, weight: 0.5}]\n"
        )
        return str(path)

    proc = cli("compress", recipe("second.pt"), "--out", str(tmp_path / "run"), *SMALL_RUN, *JSON_REPORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["stages"]["distill"]["teachers"] == 2
    assert set(report["distillation"]["history"][0]["loss_terms"]) == {"ce", "multi_teacher"}
    extra = report["recipe"]["distill"]["extra_teachers"][0]
    assert extra["checkpoint"] == str(tmp_path / "recipes" / "second.pt")  # resolved against the recipe

    proc = cli("compress", recipe("absent.pt"), "--out", str(tmp_path / "bad"), *SMALL_RUN, *JSON_REPORT)
    assert proc.returncode == 2 and "absent.pt: checkpoint not found" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "bad" / "student.pt").exists()


def test_phases_run_in_order_with_their_own_losses_and_self_review(tmp_path):
    """distill.phases (thesis 003 in spirit): hints, then logits with the earlier best student as a teacher."""
    phases = (
        "distill.phases=["
        "{name: hints, epochs: 1, lr: 0.02, losses: [{name: fitnet, student: layer2}]},"
        "{name: review, epochs: 1, lr: 0.01, self_review: true,"
        " losses: [{name: ce, weight: 0.5}, {name: multi_teacher, weight: 0.5}]}]"
    )
    out = tmp_path / "run"
    proc = cli(
        "compress",
        str(QUICKSTART),
        "--out",
        str(out),
        *SMALL_KD_RUN,
        *JSON_REPORT,
        "--set",
        phases,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    history = report["distillation"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]["loss_terms"]) == {"fitnet"}
    assert set(history[1]["loss_terms"]) == {"ce", "multi_teacher"}
    assert (out / "state" / "distill-p2-last.pt").is_file()  # one epoch checkpoint per phase

    bad = phases.replace("multi_teacher", "multi_teachr")
    proc = cli(
        "compress",
        str(QUICKSTART),
        "--out",
        str(tmp_path / "bad"),
        *SMALL_KD_RUN,
        *JSON_REPORT,
        "--set",
        bad,
    )
    assert proc.returncode == 2 and "distill.phases.1.losses.1.name" in proc.stderr, proc.stderr[-2000:]


def test_phase_checkpoint_names():
    from pathlib import Path

    from edgekd.distill.stage import phase_checkpoint

    base = Path("run/state/distill-last.pt")
    assert phase_checkpoint(base, 0) == base and phase_checkpoint(None, 2) is None
    assert phase_checkpoint(base, 2) == Path("run/state/distill-p3-last.pt")
