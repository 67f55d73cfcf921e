"""The teacher: built from the recipe (``build``), measured as the pipeline's first stage (``stage``), and
trained by ``edgekd train`` (``train``)."""

from edgekd.teacher.build import build_extra_teachers, build_teacher, check_teacher, teacher_from_config
from edgekd.teacher.stage import STAGE, run
from edgekd.teacher.train import TeacherRun, train_teacher

__all__ = [
    "STAGE",
    "TeacherRun",
    "build_extra_teachers",
    "build_teacher",
    "check_teacher",
    "run",
    "teacher_from_config",
    "train_teacher",
]
