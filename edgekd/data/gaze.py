"""What gaze labels mean: the ``(pitch, yaw)`` convention a dataset promises when it sets ``target_kind``.

Why in ``data``: the dataset defines its labels (``synth_eyes`` renders the iris from these vectors), and tasks
read that meaning from :attr:`~edgekd.data.base.DataBundle.target_kind`; tasks import it from here, so data never
depends on tasks. :mod:`edgekd.tasks.regression` re-exports both names.
"""

from __future__ import annotations

import torch

GAZE_PITCH_YAW = "gaze_pitch_yaw"  # DataBundle.target_kind of (pitch, yaw) gaze angles in radians


def gaze_vector(pitch_yaw: torch.Tensor) -> torch.Tensor:
    """Unit 3-D gaze vectors (…×3) of ``(pitch, yaw)`` radians (…×2), camera coordinates (MPIIGaze convention).

    ``(−cos p · sin y, −sin p, −cos p · cos y)``: x right, y down, and ``(0, 0)`` looks straight at the camera
    (``−z``).

    >>> gaze_vector(torch.zeros(2)).tolist()
    [-0.0, -0.0, -1.0]
    """
    pitch, yaw = pitch_yaw[..., 0], pitch_yaw[..., 1]
    return torch.stack(
        (-torch.cos(pitch) * torch.sin(yaw), -torch.sin(pitch), -torch.cos(pitch) * torch.cos(yaw)), dim=-1
    )
