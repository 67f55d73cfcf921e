"""Orchestration: everything that sequences stages and owns a run directory.

=================  ==========================================================================================
``prepare``        the one set-up (data, task, teachers → :class:`~edgekd.context.RunContext`) every run starts from
``pipeline``       ``compress``: walks ``PIPELINE`` (teacher → prune → distill → export → profile → report)
``commands``       ``edgekd prune | distill | export``: one stage at a time, chained through the run directory
``resume``         stage markers and epoch checkpoints for ``--resume``
``ranks``          ``compress`` on several ranks; ``launch``: ``--nproc`` through torchrun
``components``     recipe load with every registered name checked (what the commands call)
``log``            the run's log file and stage clock
=================  ==========================================================================================
"""

from edgekd.run.commands import distill_only, export_only, prune_only
from edgekd.run.components import check_components, load_recipe, recipe_from_dict
from edgekd.run.pipeline import PIPELINE, compress
from edgekd.run.prepare import prepare

__all__ = [
    "PIPELINE",
    "check_components",
    "compress",
    "distill_only",
    "export_only",
    "load_recipe",
    "prepare",
    "prune_only",
    "recipe_from_dict",
]
