"""Interop and persistence: everything that moves a model across a boundary.

- :mod:`~lux_torch.interop.torch_nn` — ``torch.nn`` in and out (``from_torch``,
  ``to_torch``, ``state_dict``, ``load_state_dict``); its names are re-exported here, so
  ``from lux_torch.interop import TorchModule`` keeps working.
- :mod:`~lux_torch.interop.checkpoint` — ``save`` / ``load`` (public as
  ``lux_torch.checkpoint`` too), verified by ``_checkpoint_verify`` before unpickling.
- :mod:`~lux_torch.interop.export` — ``export`` through ``torch.export`` (``lux_torch.deploy``).
- :mod:`~lux_torch.interop.safetensors` — ``save_safetensors`` / ``load_safetensors``
  (optional extra ``lm``).
- :mod:`~lux_torch.interop.precision` — ``f16`` / ``bf16`` / ``f32`` / ``f64``
  (``lux_torch.precision``).
"""

from __future__ import annotations

from .safetensors import load_safetensors, save_safetensors
from .torch_nn import (
    LuxModule,
    StateDictError,
    TorchModule,
    from_torch,
    load_state_dict,
    state_dict,
    to_torch,
)

__all__ = [
    "LuxModule",
    "StateDictError",
    "TorchModule",
    "from_torch",
    "load_safetensors",
    "load_state_dict",
    "save_safetensors",
    "state_dict",
    "to_torch",
]
