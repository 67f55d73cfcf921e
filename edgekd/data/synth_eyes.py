"""``synth_eyes``: procedurally rendered eye crops with a sclera mask and the gaze angles of every image.

The idea is UnityEyes (Wood, Baltrušaitis, Morency, Robinson & Bulling, "Learning an appearance-based gaze
estimator from one million synthesised images", ETRA 2016): render eyes whose geometry is known, so labels are
exact and free. This renderer is our own and much simpler — a 2-D projection of a spherical eyeball, done on
whole batches of pixel grids with torch (no per-image loop, no graphics stack):

* **eyeball**: radius ``R``; the iris centre sits at ``R · (g_x, g_y)`` from the eye centre, where
  ``g = (−cos p · sin y, −sin p, −cos p · cos y)`` is the gaze vector of pitch ``p`` and yaw ``y`` in camera
  coordinates (x right, y down, looking at the camera is ``−z``; the MPIIGaze convention;
  :func:`edgekd.data.gaze.gaze_vector`);
* **iris and pupil**: discs on the sphere, seen as ellipses foreshortened by ``cos θ = cos p · cos y`` along the
  direction of the iris offset; the pupil size varies;
* **eyelids**: two parabolic arcs through the eye corners, with a random opening; the upper lid follows the
  pitch (it drops when the eye looks down), as real lids do; lashes darken the upper lid's edge;
* **skin, lighting, noise**: random skin / sclera / iris tones (or colours, with ``channels: 3``), a linear
  illumination gradient, a soft shadow under the upper lid, a specular glint, Gaussian sensor noise; small
  random eye position, size and roll.

Both labels come from the same geometry: ``target: gaze`` gives ``(pitch, yaw)`` in radians (float32, N×2,
the regression targets of thesis 001; ``DataBundle.target_kind`` says so, which adds ``angular_error_deg``),
``target: sclera`` gives the visible-sclera mask (uint8 N×H×W, served as int64 by the loader; 0 background,
1 sclera: the segmentation targets of thesis 000). Images are anti-aliased by rendering edges as one-pixel
ramps; the masks are the hard (pixel-centre) versions of the same shapes.

**Deterministic**: the samples are drawn in chunks of 256, each from a generator seeded by
``(args.seed, split, chunk)``, so the same ``seed`` gives the same images on every machine and the first ``k``
samples do not depend on how many are generated (``train_limit`` only truncates). Train and eval never share
a generator.

**Augmentation**: the loader's random horizontal flip would mirror the image but not negate the yaw, so a
gaze recipe must set ``data.augment: false`` (the builder refuses ``augment: true`` with ``target: gaze``).
The flip is label-safe for the sclera mask only if the loader flips the mask too.

Options (``data.args``, :class:`SynthEyesParams`): ``target`` (``gaze`` | ``sclera``, default gaze), ``size``
([H, W] or one int, each >= 16; default [36, 60]), ``train_size`` / ``eval_size`` (samples rendered; 20000 /
2000), ``channels`` (1 or 3; default 1), ``seed`` (default 0).

Recipe::

    data: {name: synth_eyes, augment: false, args: {target: gaze, size: [36, 60], train_size: 20000}}
    data: {name: synth_eyes, args: {target: sclera, seed: 0}}
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BeforeValidator, Field

from edgekd.data import register_dataset
from edgekd.data.base import DataBundle, Preprocessing, TensorSplit
from edgekd.data.gaze import GAZE_PITCH_YAW, gaze_vector
from edgekd.data.params import Channels, DatasetParams, NonNegativeInt, PositiveInt, Size
from edgekd.recipe.schema import DataConfig

CHUNK = 256
TARGETS = ("gaze", "sclera")
MIN_SIZE = 16  # below 16 px the eye's parts (pupil, lids, glint) are under a pixel


def _known_target(value: Any) -> Any:
    """Name the bad target and the valid ones (pydantic's Literal message lists them without the key's meaning)."""
    if value not in TARGETS:
        raise ValueError(f"{value!r} is not one of {', '.join(TARGETS)}")
    return value


def _large_enough(value: tuple[int, int]) -> tuple[int, int]:
    if min(value) < MIN_SIZE:
        raise ValueError(f"each of [height, width] must be >= {MIN_SIZE}, not {list(value)}")
    return value


class SynthEyesParams(DatasetParams):
    """``data.args`` of ``synth_eyes``; defaults render MPIIGaze-sized grey crops with gaze labels."""

    target: Annotated[Literal["gaze", "sclera"], BeforeValidator(_known_target)] = Field(
        "gaze", description="Labels: gaze (pitch, yaw in radians, N×2) or sclera (0/1 mask, N×H×W)."
    )
    size: Annotated[Size, AfterValidator(_large_enough)] = Field(
        (36, 60), description="[height, width] of the crops (or one int), each >= 16; MPIIGaze's is [36, 60]."
    )
    train_size: PositiveInt = Field(20000, description="Training samples rendered (train_limit truncates).")
    eval_size: PositiveInt = Field(2000, description="Evaluation samples rendered (eval_limit truncates).")
    channels: Channels = Field(1, description="1 (grey tones) or 3 (colour tones).")
    seed: NonNegativeInt = Field(0, description="Seeds every sample: the same seed gives the same images.")

    def conflicts(self, cfg: DataConfig) -> dict[str, str]:
        """A flipped eye keeps its yaw label, so a gaze dataset must not be augmented."""
        if self.target == "gaze" and cfg.augment:
            return {
                "augment": "a horizontal flip mirrors the eye but not its yaw label; set data.augment: false "
                "with synth_eyes target: gaze"
            }
        return {}


# Pixel statistics of the renderer (36×60, seed 0), measured on 20 000 training images (grey and colour agree).
PREPROCESSING = {1: Preprocessing(mean=(0.50,), std=(0.21,)), 3: Preprocessing((0.50,) * 3, (0.21,) * 3)}
# Gaze ranges (radians): ±25° pitch and ±35° yaw, about the span of MPIIGaze's normalised data.
MAX_PITCH = math.radians(25.0)
MAX_YAW = math.radians(35.0)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _ramp(distance: torch.Tensor) -> torch.Tensor:
    """Coverage of a pixel by a shape whose signed distance (px, positive inside) is ``distance``."""
    return (distance + 0.5).clamp(0.0, 1.0)


def _ellipse_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    axis: torch.Tensor,
    ra: torch.Tensor,
    rb: torch.Tensor,
) -> torch.Tensor:
    """Approximate signed distance (px, positive inside) to an ellipse with semi-axis ``ra`` along unit ``axis``."""
    dx, dy = x - cx, y - cy
    along = dx * axis[:, 0, None, None] + dy * axis[:, 1, None, None]
    across = -dx * axis[:, 1, None, None] + dy * axis[:, 0, None, None]
    q = torch.sqrt((along / ra) ** 2 + (across / rb) ** 2 + 1e-12)
    return (1.0 - q) * torch.minimum(ra, rb)


def render(
    n: int, height: int, width: int, channels: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``n`` eyes. Returns uint8 images N×C×H×W, gaze N×2 (pitch, yaw; rad) and uint8 sclera masks N×H×W."""
    s = min(height, width / 1.6)  # the eye's scale in pixels; 36×60 → 36

    def u(low: float, high: float) -> torch.Tensor:
        return _uniform(gen, n, low, high)[:, None, None]

    pitch, yaw = _uniform(gen, n, -MAX_PITCH, MAX_PITCH), _uniform(gen, n, -MAX_YAW, MAX_YAW)
    gaze = torch.stack((pitch, yaw), dim=1)
    g = gaze_vector(gaze)
    cx, cy = width / 2 + u(-0.08, 0.08) * s, height / 2 + u(-0.08, 0.08) * s
    half_width = u(0.62, 0.78) * s  # eye corner to centre
    radius = half_width * u(1.0, 1.15)  # eyeball radius
    roll = u(-0.15, 0.15)
    # the upper lid follows the gaze: up to ~40% wider looking up (pitch > 0), narrower looking down
    open_up = u(0.30, 0.45) * s * (1.0 + 0.9 * torch.sin(pitch)[:, None, None])
    open_down = u(0.18, 0.30) * s

    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width) + 0.5
    # eye-aligned coordinates (rolled with the head)
    ex = (xs - cx) * torch.cos(roll) + (ys - cy) * torch.sin(roll)
    ey = -(xs - cx) * torch.sin(roll) + (ys - cy) * torch.cos(roll)
    t = (1.0 - (ex / half_width) ** 2).clamp_min(0.0)
    upper, lower = -open_up * t, open_down * t
    # signed distance (px) to the opening between the lids; beyond the corners it is outside everywhere
    eye_dist = torch.minimum(torch.minimum(ey - upper, lower - ey), half_width - ex.abs())
    eye_dist = torch.where(t > 0, eye_dist, torch.full_like(eye_dist, -float(height)))

    # iris / pupil: discs on the sphere; their image is an ellipse squashed along the offset direction
    iris_cx, iris_cy = cx + radius * g[:, 0, None, None], cy + radius * g[:, 1, None, None]
    offset = g[:, :2]
    norm = offset.norm(dim=1, keepdim=True)
    axis = torch.where(norm > 1e-6, offset / norm.clamp_min(1e-6), torch.tensor([1.0, 0.0]))
    cos_theta = (-g[:, 2]).clamp(0.2, 1.0)[:, None, None]
    r_iris = radius * u(0.40, 0.48)
    r_pupil = r_iris * u(0.30, 0.55)
    iris_dist = _ellipse_distance(xs, ys, iris_cx, iris_cy, axis, r_iris * cos_theta, r_iris)
    pupil_dist = _ellipse_distance(xs, ys, iris_cx, iris_cy, axis, r_pupil * cos_theta, r_pupil)

    # tones (grey) or colours: skin, sclera, iris, pupil, lashes, each per sample and channel
    def tone(low: float, high: float, spread: float) -> torch.Tensor:
        base = _uniform(gen, n, low, high)[:, None]
        tint = (torch.rand(n, channels, generator=gen) - 0.5) * spread if channels > 1 else 0.0
        return (base + tint).clamp(0.0, 1.0)[:, :, None, None]

    skin, sclera = tone(0.35, 0.75, 0.15), tone(0.72, 0.95, 0.05)
    iris, pupil, lashes = tone(0.12, 0.50, 0.35), tone(0.02, 0.08, 0.0), tone(0.05, 0.20, 0.05)

    eye_a = _ramp(eye_dist)[:, None]
    iris_a = _ramp(iris_dist)[:, None] * eye_a
    pupil_a = _ramp(pupil_dist)[:, None] * eye_a
    lash_a = _ramp(1.2 - (ey - upper).abs()) * (ex.abs() < half_width * 1.05) * (ey <= upper + 1.2)
    image = skin * (1 - eye_a) + sclera * eye_a
    image = image * (1 - iris_a) + iris * iris_a
    image = image * (1 - pupil_a) + pupil * pupil_a
    below_lid = (ey - upper).clamp_min(0.0)
    shadow = 1.0 - 0.35 * torch.exp(-((below_lid / (0.12 * s)) ** 2)) * (t > 0) * (ey >= upper)
    image = image * shadow[:, None]
    image = image * (1 - lash_a[:, None]) + lashes * lash_a[:, None]

    glint_x = iris_cx + r_iris * u(-0.5, 0.5)
    glint_y = iris_cy - r_iris * u(0.1, 0.5)
    glint = _ramp(u(0.6, 1.4) - torch.sqrt((xs - glint_x) ** 2 + (ys - glint_y) ** 2)) * (eye_dist > 0)
    image = image + 0.6 * glint[:, None]

    angle = u(0.0, 2 * math.pi)
    slope = u(0.0, 0.5) / s
    light = u(0.75, 1.15) + slope * (
        (xs - width / 2) * torch.cos(angle) + (ys - height / 2) * torch.sin(angle)
    )
    image = image * light[:, None]
    noise_std = _uniform(gen, n, 0.005, 0.04)[:, None, None, None]
    image = image + noise_std * torch.randn(image.shape, generator=gen)
    images = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    mask = ((eye_dist > 0) & (iris_dist <= 0)).to(torch.uint8)
    return images, gaze, mask


def generate(
    count: int, height: int, width: int, channels: int, seed: int, split: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``count`` samples of split ``split`` (0 train, 1 eval) for ``seed``: images, gaze, masks."""
    parts = []
    for chunk in range(math.ceil(count / CHUNK)):
        gen = torch.Generator().manual_seed(((seed * 2 + split) * 1_000_003 + chunk) % (2**63))
        parts.append(render(CHUNK, height, width, channels, gen))  # whole chunks: draws never depend on count
    images, gaze, masks = (torch.cat(tensors)[:count] for tensors in zip(*parts, strict=True))
    return images, gaze, masks


@register_dataset("synth_eyes", SynthEyesParams)
def build_synth_eyes(cfg: DataConfig, params: SynthEyesParams) -> DataBundle:
    """Synthetic eye crops (UnityEyes-style): gaze (pitch, yaw) regression or sclera segmentation targets."""
    height, width = params.size
    gaze_target = params.target == "gaze"
    splits = {}
    for index, (split, size, limit) in enumerate(
        (("train", params.train_size, cfg.train_limit), ("eval", params.eval_size, cfg.eval_limit))
    ):
        count = min(size, limit) if limit else size
        images, gaze, masks = generate(count, height, width, params.channels, params.seed, index)
        splits[split] = TensorSplit(images, gaze if gaze_target else masks)
    return DataBundle(
        name="synth_eyes",
        train=splits["train"],
        eval=splits["eval"],
        num_classes=2,  # outputs: (pitch, yaw), or the classes background / sclera
        preprocessing=PREPROCESSING[params.channels],
        class_names=("pitch", "yaw") if gaze_target else ("background", "sclera"),
        extra={"target": params.target, "seed": str(params.seed)},
        target_kind=GAZE_PITCH_YAW if gaze_target else "",
    )
