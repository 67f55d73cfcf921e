"""Boundary-weighted pixel KD (thesis 004): extra weight on pixels near class boundaries.

Most segmentation error of a pruned student is at object borders: interiors are easy, and a thin structure (a
sclera rim, a vessel) is nearly all border. This is ``pixel_kd`` with per-pixel weights::

    w = 1 + boundary_weight · [pixel lies within `band` pixels of a class boundary]
    boundary_kd = Σ w · valid · T²·KL / Σ w · valid          (KL per pixel over classes)

A pixel is in the band when some pixel of another class lies within ``band`` pixels of it (Chebyshev distance:
a (2·band+1)² window, computed with max/min pooling of the class map). Image borders are not class boundaries.
The class map is the label map (``boundary_from: label``), which needs N×H×W labels, or the teacher's argmax
(``boundary_from: teacher``), which works without labels. Normalising by ``Σ w`` keeps the loss a weighted mean
of per-pixel KLs, so its weight means the same as ``pixel_kd``'s. Ignored label pixels (``ignore_index``) count
nowhere, but they may mark a band on their neighbours (VOC draws its ignore label along object borders).

Defaults: ``band: 2``, ``boundary_weight: 4`` (band pixels count 5×), ``boundary_from: label``,
``temperature: 1``, ``ignore_index: 255``.

Recipe::

    distill: {losses: [{name: ce, weight: 1.0}, {name: boundary_kd, weight: 1.0, band: 2, boundary_weight: 4.0}]}
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from edgekd.distill.losses import LOSSES
from edgekd.distill.losses._dense import pixel_mean
from edgekd.distill.losses.base import DistillBatch
from edgekd.distill.losses.pixel_kd import PixelKD, PixelKDParams
from edgekd.errors import InputError


class BoundaryKDParams(PixelKDParams):
    band: int = Field(2, ge=1, description="Half-width in pixels of the band around class boundaries.")
    boundary_weight: float = Field(
        4.0, ge=0, description="Extra weight of band pixels (they count 1 + this)."
    )
    boundary_from: Literal["label", "teacher"] = Field("label", description="Class map the band is drawn on.")


@LOSSES.register("boundary_kd")
class BoundaryKD(PixelKD):
    """Pixel KD that counts the pixels near class boundaries ``1 + boundary_weight`` times."""

    Params = BoundaryKDParams
    loss_name: ClassVar[str] = "boundary_kd"

    def pixel_average(
        self, kl: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor | None, batch: DistillBatch
    ) -> torch.Tensor:
        """The mean of ``pixel_kd``, band pixels of the class map counted ``1 + boundary_weight`` times."""
        p: BoundaryKDParams = self.params
        if p.boundary_from == "label" and labels is None:
            raise InputError(
                f"boundary_kd: boundary_from: label needs N×H×W label maps, got labels of shape "
                f"{tuple(batch.targets.shape)}; set boundary_from: teacher"
            )
        # The teacher's grid is the KL's grid (``dense_pair`` resizes the student, never the teacher).
        classes = labels if p.boundary_from == "label" else batch.teacher.detach().argmax(dim=1)
        return pixel_mean(kl, valid, classes, p.band, p.boundary_weight)
