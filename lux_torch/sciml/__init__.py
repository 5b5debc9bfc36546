"""The differential-equation and implicit-layer families (scientific machine learning).

- :mod:`~lux_torch.sciml.ode` — ``NeuralODE`` and friends on torchdiffeq (optional extra
  ``ode``); public as ``lux_torch.ode``.
- :mod:`~lux_torch.sciml.sde` — ``NeuralSDE`` on torchsde (optional extra ``sde``), the
  Brownian motion a pure function of ``st["key"]``.
- :mod:`~lux_torch.sciml.cnf` — ``CNF``: continuous normalizing flows (FFJORD) on
  ``NeuralODE``, exact or Hutchinson traces.
- :mod:`~lux_torch.sciml.hamiltonian` — ``HamiltonianNN``: Hamilton's vector field of a
  learned energy ``H(q, p)`` (Greydanus et al. 2019), for use inside ``NeuralODE``.
- :mod:`~lux_torch.sciml.shooting` — multiple shooting (DiffEqFlux's ``multiple_shoot``):
  ``multiple_shoot``, the ``MultipleShootingLoss`` objective, ``ShootingNODE``.
- :mod:`~lux_torch.sciml.deq` — ``DEQ``: deep equilibrium layers with implicit (IFT),
  Jacobian-free, phantom and unrolled gradients that work under ``torch.func``, ``vmap``
  and ``torch.compile``.
- :mod:`~lux_torch.sciml.fixed_point` — the batched fixed-point solvers (fixed-point
  iteration, Anderson, Broyden) ``DEQ`` uses: ``solve``, ``SOLVERS``.
- ``_common`` — what the solver wrappers share (lazy import of the extra, the solve kept
  out of ``torch.compile``'s graphs).

Each module imports its solver library on first use, so importing this package needs only
torch.
"""

from __future__ import annotations
