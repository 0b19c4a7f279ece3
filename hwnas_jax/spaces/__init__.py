"""Search spaces: one module per space (genome codec, Flax networks, analytic costs).

Use :func:`get` to resolve a configured space name; the space modules are imported lazily, so
asking for one space never imports the others.
"""

from __future__ import annotations

import importlib
import types

from hwnas_jax.errors import UserError

NAMES = ('nb201', 'ofa')


def get(name: str) -> types.ModuleType:
    """The module of the search space `name`.

    Args:
      name: one of :data:`NAMES` ('nb201': NAS-Bench-201; 'ofa': OFA MobileNetV3).

    Returns:
      The space module, e.g. ``hwnas_jax.spaces.nb201``.

    Raises:
      ValueError: `name` is not a known search space.
    """
    if name not in NAMES:
        raise UserError(f'unknown search space {name!r}; known spaces: {", ".join(NAMES)}')
    return importlib.import_module(f'{__name__}.{name}')
