"""The differential-equation and implicit-layer families (scientific machine learning).

- :mod:`~lux_torch.sciml.ode` — ``NeuralODE`` and friends on torchdiffeq (optional extra
  ``ode``); public as ``lux_torch.ode``.

Each module imports its solver library on first use, so importing this package needs only
torch.
"""

from __future__ import annotations
