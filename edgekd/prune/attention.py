"""Attention layers: prune head dimensions consistently, and update the sizes the forward pass reads.

Why: a multi-head attention layer reshapes its projections into ``num_heads × head_dim``. Removing arbitrary
channels from ``qkv`` (or from ``nn.MultiheadAttention``'s ``embed_dim``) leaves a tensor that no longer splits
into the heads the weights were trained for, or does not split at all; and the sizes the forward reads are
plain attributes torch-pruning does not know about (torchvision's ``VisionTransformer.hidden_dim``, timm's
``Attention.head_dim``/``attn_dim``), so a pruned ViT failed with "shape '[1, 768, 196]' is invalid".

What edgekd does, following torch-pruning's ViT examples (``examples/transformers/prune_timm_vit.py``,
``examples/torchvision_models``; DepGraph, Fang et al., CVPR'23, arXiv:2301.12900):

* timm ``Attention`` (fused ``qkv``): torch-pruning's ``num_heads`` handling removes the same head dimensions
  from every head of q, k and v; afterwards ``num_heads``, ``head_dim``, ``attn_dim`` and ``scale`` are set
  from the pruned ``qkv`` (``scale`` follows ``head_dim`` as the fused kernel's default scale does, so the
  fused and the explicit path compute the same thing).
* ``nn.MultiheadAttention``: ``out_channel_groups = num_heads``, so ``embed_dim`` loses the same positions in
  every head; torch-pruning's MHA pruner updates ``embed_dim``/``head_dim``, and a torchvision
  ``VisionTransformer``'s ``hidden_dim`` is set to its patch projection's new width.
* any other module with an integer ``num_heads`` (an attention layout edgekd does not know): its layers keep
  their widths, and with them the residual stream it reads, so whatever it reshapes stays valid.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

log = logging.getLogger("edgekd")

_PROJECTIONS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class AttentionPlan:
    """The attention layers of one model, by module name (each probe prunes a deep copy)."""

    heads: dict[str, int] = field(default_factory=dict)  # timm qkv Linear -> num_heads
    groups: dict[str, int] = field(default_factory=dict)  # nn.MultiheadAttention -> num_heads
    kept: tuple[str, ...] = ()  # layers of unknown attention layouts: never pruned

    def pruner_kwargs(self, modules: Mapping[str, nn.Module]) -> dict[str, Any]:
        """torch-pruning ``BasePruner`` arguments for the copy whose modules are ``modules``."""
        kwargs: dict[str, Any] = {}
        if self.heads:
            kwargs["num_heads"] = {modules[n]: h for n, h in self.heads.items()}
        if self.groups:
            kwargs["out_channel_groups"] = {modules[n]: h for n, h in self.groups.items()}
        return kwargs

    def update(self, model: nn.Module, pruned_heads: Mapping[nn.Module, int]) -> None:
        """Write the pruned sizes into the attributes the forward pass reads."""
        modules = dict(model.named_modules())
        for qkv_name in self.heads:
            attention = modules[qkv_name.rpartition(".")[0]]
            _update_timm_attention(attention, pruned_heads.get(modules[qkv_name], attention.num_heads))
        if self.groups:
            _update_torchvision_vit(model)


def plan_attention(model: nn.Module) -> AttentionPlan:
    """Find the attention layers of ``model`` and how each is pruned (see the module docstring)."""
    heads: dict[str, int] = {}
    groups: dict[str, int] = {}
    unknown: list[str] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.MultiheadAttention):
            groups[name] = int(module.num_heads)
        elif _is_timm_attention(module):
            heads[f"{prefix}qkv"] = int(module.num_heads)
        elif isinstance(getattr(module, "num_heads", None), int) and not any(
            name.startswith(f"{u}.") for u in unknown
        ):
            unknown.append(name)
    kept: list[str] = []
    for name in unknown:  # a block that merely holds a known attention layer (and its num_heads) is fine
        module = model.get_submodule(name)
        if any(isinstance(m, nn.MultiheadAttention) or _is_timm_attention(m) for m in module.modules()):
            continue
        prefix = f"{name}." if name else ""
        layers = [prefix + n for n, m in module.named_modules() if isinstance(m, _PROJECTIONS)]
        if layers:
            log.debug(
                "attention layout of '%s' (%s) unknown: its layers keep their widths", name, type(module)
            )
            kept.extend(layers)
    return AttentionPlan(heads, groups, tuple(kept))


def _is_timm_attention(module: nn.Module) -> bool:
    """timm's fused-qkv ``Attention`` with its own forward (reshapes by ``num_heads``/``head_dim``/``attn_dim``).

    Only where timm is already imported (a timm model was built): importing it costs a second or two. timm before
    1.0 has no ``timm.layers.Attention`` (its attention reshapes by the input width): its layout counts as unknown.
    """
    if "timm" not in sys.modules:
        return False
    try:
        from timm.layers import Attention
    except ImportError:
        return False
    if not isinstance(module, Attention) or type(module).forward is not Attention.forward:
        return False
    plain = all(isinstance(getattr(module, n, None), nn.Identity) for n in ("q_norm", "k_norm", "norm"))
    qkv = getattr(module, "qkv", None)
    return (
        plain
        and getattr(module, "gate", None) is None
        and isinstance(qkv, nn.Linear)
        and qkv.out_features == 3 * module.num_heads * module.head_dim
    )


def _update_timm_attention(attention: nn.Module, num_heads: int) -> None:
    old_head_dim = attention.head_dim
    attention.num_heads = int(num_heads)
    attention.head_dim = attention.qkv.out_features // (3 * attention.num_heads)
    if hasattr(attention, "attn_dim"):
        attention.attn_dim = attention.num_heads * attention.head_dim
    if (
        isinstance(getattr(attention, "scale", None), float)
        and abs(attention.scale - old_head_dim**-0.5) < 1e-12
    ):
        attention.scale = attention.head_dim**-0.5


def _update_torchvision_vit(model: nn.Module) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    for module in model.modules():
        if isinstance(module, VisionTransformer):
            module.hidden_dim = int(module.conv_proj.out_channels)
