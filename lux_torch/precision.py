"""Public path of :mod:`lux_torch.interop.precision`: precision casts of trees.

See ARCHITECTURE.md, "Layout".
"""

from typing import TYPE_CHECKING

from ._layout import alias

if TYPE_CHECKING:
    from .interop.precision import *  # noqa: F403  (the names, for type checkers)

alias(__name__, "lux_torch.interop.precision")
