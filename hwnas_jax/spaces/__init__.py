"""Search spaces: each a :class:`~hwnas_jax.spaces.base.Space` in its own files.

:func:`make` builds the configured space; the space modules are imported lazily, so asking for
one space never imports the others. To add a space: write ``spaces/<name>_space.py`` with a
``Space`` subclass (see :mod:`hwnas_jax.spaces.base`) and add one line to :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib

from hwnas_jax.errors import UserError

# space name -> 'module:class' of its Space.
REGISTRY = {
    'nb201': 'hwnas_jax.spaces.nb201_space:NB201',
    'ofa': 'hwnas_jax.spaces.ofa_space:OFA',
}
NAMES = tuple(REGISTRY)


def space_class(name: str) -> type:
    """The Space class of the search space `name`; UserError listing the spaces otherwise."""
    if name not in REGISTRY:
        raise UserError(f'unknown search space {name!r}; known spaces: {", ".join(NAMES)}')
    module, cls = REGISTRY[name].split(':')
    return getattr(importlib.import_module(module), cls)


def make(config):
    """The search space `config.space.name`, bound to `config`."""
    return space_class(config.space.name)(config)
