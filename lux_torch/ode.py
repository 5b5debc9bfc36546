"""Public path of :mod:`lux_torch.sciml.ode`: neural ODEs on torchdiffeq.

See ARCHITECTURE.md, "Layout".
"""

from typing import TYPE_CHECKING

from ._layout import alias

if TYPE_CHECKING:
    from .sciml.ode import *  # noqa: F403  (the names, for type checkers)

alias(__name__, "lux_torch.sciml.ode")
