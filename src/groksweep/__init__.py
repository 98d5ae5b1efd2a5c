"""groksweep: train whole grids of small models at once in JAX, and reduce their trajectories
to grokking-time phase diagrams.

Data flows one way: :class:`Sweep` (spec) -> :func:`run` (plan, compiled trainer, labelled
trajectories) -> :func:`grokking_time` (phase maps) -> :mod:`groksweep.plot` (figures).
"""

from groksweep.engine import run
from groksweep.params import SpecError
from groksweep.phase import grokking_time, reduce_seeds, stage_times
from groksweep.spec import Sweep

__all__ = ["Sweep", "SpecError", "run", "grokking_time", "reduce_seeds", "stage_times"]
