"""``from masklab import api``: the public workflows (see :mod:`masklab.workflows`) and ``compose``."""

from masklab.config import compose
from masklab.workflows import *  # noqa: F403
from masklab.workflows import __all__ as _workflows

__all__ = ["compose", *_workflows]
