"""Public module paths that outlived a move (see ARCHITECTURE.md, "Layout").

``lux_torch.ode``, ``lux_torch.checkpoint``, ``lux_torch.deploy`` and
``lux_torch.precision`` are small files that call :func:`alias`: importing one gives the
module that now holds the code (the very same object), so its names, its internals and
pickles that name the old path all keep working.
"""

from __future__ import annotations

import importlib
import sys


def alias(public: str, home: str) -> None:
    """Make the module named ``public`` be the module ``home`` in ``sys.modules``."""
    sys.modules[public] = importlib.import_module(home)
