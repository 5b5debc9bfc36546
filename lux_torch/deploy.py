"""Public path of :mod:`lux_torch.interop.export`: export through torch.export.

See ARCHITECTURE.md, "Layout".
"""

from typing import TYPE_CHECKING

from ._layout import alias

if TYPE_CHECKING:
    from .interop.export import *  # noqa: F403  (the names, for type checkers)

alias(__name__, "lux_torch.interop.export")
