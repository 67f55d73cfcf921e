"""The synthesis contract and the pieces every data-free method shares.

A :class:`Synthesizer` owns what it trains (generators, their optimisers, its noise RNG) and answers one call,
:meth:`Synthesizer.synthesize`: spend this student step's synthesis budget and return fresh images in the
teacher's input space (normalised like the real data, inside the range real pixels map to). The shared terms
are the ones the papers share: BatchNorm-statistics matching (DeepInversion, Yin et al., CVPR 2020), image
priors (total variation, L2), teacher–student L1 disagreement (DFAD, Fang et al., 2019) and a small DCGAN-style
generator (DAFL, Chen et al., ICCV 2019).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from edgekd.data.base import Preprocessing
from edgekd.recipe.data_free import DataFreeConfig
from edgekd.tasks.base import Task


class SynthParams(BaseModel):
    """Base of every method's own options (the keys beside ``method``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GeneratorParams(SynthParams):
    """Options of the methods that train a generator (DAFL, DFAD, the two generators): its width."""

    width: int = Field(32, ge=4, description="Generator channels.")


@dataclass(frozen=True)
class SynthContext:
    """What a method is built from: the frozen teacher, the student it plays against, and the input space."""

    teacher: nn.Module
    student: nn.Module
    task: Task
    shape: tuple[int, int, int]  # C, H, W of one input
    num_classes: int
    preprocessing: Preprocessing
    budget: DataFreeConfig
    seed: int


class Synthesizer(nn.Module):
    """Base class: subclasses set ``Params`` and implement :meth:`synthesize`.

    Submodules (generators) are what :meth:`state_dict` saves; optimisers and the noise RNG are saved by
    :meth:`extra_state` so a resumed run draws the same samples as an uninterrupted one.
    """

    Params: ClassVar[type[SynthParams]] = SynthParams

    def __init__(self, params: SynthParams, ctx: SynthContext) -> None:
        super().__init__()
        self.params = params
        self.ctx = ctx
        self.rng = torch.Generator().manual_seed(ctx.seed * 1_000_003 + 17)
        self.optimizers: list[torch.optim.Optimizer] = []
        low, high = pixel_bounds(ctx.preprocessing, ctx.shape[0])
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)

    @classmethod
    def class_conditional(cls, params: SynthParams) -> bool:
        """Whether the method's terms need a classification head (one-hot, entropy, class-conditional CE)."""
        return False

    def synthesize(self, n: int, step: int) -> torch.Tensor | None:  # pragma: no cover - abstract
        """Spend one student step's synthesis budget; return ``n`` fresh detached images, or ``None`` when the
        method makes none at this ``step`` (the student then trains on the memory bank)."""
        raise NotImplementedError

    def make_generators(self, count: int, width: int) -> list[Generator]:
        """``count`` generators sized from the data, each with its Adam optimizer in ``self.optimizers``."""
        budget = self.ctx.budget
        made = [
            Generator(budget.latent_dim, self.ctx.shape, (self.low, self.high), width) for _ in range(count)
        ]
        self.optimizers = [torch.optim.Adam(g.parameters(), lr=budget.generator_lr) for g in made]
        return made

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.ctx.budget.latent_dim, generator=self.rng).to(self.low.device)

    def close(self) -> None:
        """Remove the hooks the method put on the teacher (the teacher outlives the method)."""
        for value in vars(self).values():
            if isinstance(value, BNStatistics):
                value.remove()

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state(), "optimizers": [o.state_dict() for o in self.optimizers]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def pixel_bounds(preprocessing: Preprocessing, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel range (1×C×1×1) that pixels in [0, 1] take once normalised: synthetic images stay in it."""
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32).expand(channels).reshape(1, -1, 1, 1)
    return (0.0 - mean) / std, (1.0 - mean) / std


class Generator(nn.Module):
    """DCGAN-style generator of DAFL/DFAD: noise → FC → two ×2 upsampling conv blocks → C×H×W image.

    Sized from the data: the FC output is ``ceil(H/4)×ceil(W/4)``, so 28×28 (Fashion-MNIST), 64×64 or 36×60 all
    work (a crop removes the rounding). A tanh maps the output into the normalised range of real pixels.
    """

    def __init__(
        self, latent_dim: int, shape: tuple[int, int, int], bounds: tuple[torch.Tensor, ...], width: int = 32
    ):
        super().__init__()
        channels, self.height, self.width = shape
        self.h0, self.w0 = math.ceil(self.height / 4), math.ceil(self.width / 4)
        self.fc = nn.Linear(latent_dim, 2 * width * self.h0 * self.w0)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        self.register_buffer("low", bounds[0], persistent=False)
        self.register_buffer("high", bounds[1], persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(len(z), -1, self.h0, self.w0)
        x = self.body(x)[..., : self.height, : self.width]
        return self.low + (torch.tanh(x) + 1) / 2 * (self.high - self.low)


class BNStatistics:
    """Forward hooks on every BatchNorm layer of ``model``: the distance of each batch's statistics to the
    layer's running statistics (DeepInversion's feature-distribution regulariser), summed over layers.

    Only forward passes inside :meth:`recording` are measured, so the same teacher can run un-hooked elsewhere.
    """

    def __init__(self, model: nn.Module) -> None:
        self.losses: list[torch.Tensor] = []
        self.active = False
        layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.layers = [m for m in layers if m.running_mean is not None]
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.active:
            return
        x = inputs[0]
        dims = [d for d in range(x.ndim) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.losses.append(
            torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2)
        )

    @contextlib.contextmanager
    def recording(self) -> Iterator[BNStatistics]:
        self.losses, self.active = [], True
        try:
            yield self
        finally:
            self.active = False

    def loss(self) -> torch.Tensor:
        """Mean over layers of the last recorded forward pass (0 for a model without BatchNorm)."""
        return torch.stack(self.losses).mean() if self.losses else torch.zeros(())

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block (its BatchNorm statistics untouched by synthetic batches).

    Every module's own flag is restored, not just the top one: ``freeze_student_bn`` leaves BatchNorm layers in
    eval mode inside a training student, and ``model.train()`` would undo that.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def output(ctx: SynthContext, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return ctx.task.output_tensor(model(images))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (DeepInversion's smoothness prior)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy


def disagreement(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of student and teacher outputs (DFAD's adversarial objective)."""
    return (student - teacher).abs().mean()


def confident(teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's outputs with their own argmax (DAFL's one-hot loss): low when confident."""
    return F.cross_entropy(teacher, teacher.argmax(1).detach())


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """One optimiser step on ``params`` only: gradients through teacher and student go nowhere else.

    Why ``autograd.grad`` rather than ``backward``: the student's own optimiser must not see gradients left by
    the synthesis step (they would leak into its update under gradient accumulation or a later refactor).
    """
    if not loss.requires_grad:  # every term weighted 0 (or no BatchNorm to match): nothing to learn
        return
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
