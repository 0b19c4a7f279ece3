"""Trains an architecture a search found, from scratch, to measure its real accuracy.

``config.space.genome`` names the architecture, as text:
  nb201: a NAS-Bench-201 arch string ``|nor_conv_3x3~0|+|...|`` or a JSON list of 6 op indices;
  ofa: an OFA subnet config ``{"ks": [20], "e": [20], "d": [5]}`` or a JSON list of 45 gene
    indices;
  either: the path of a search's ``best.json`` (its ``genome``).
The exact ``Network`` of that genome (``space.*`` and ``data.num_classes`` give its size) is
trained with ``training.fit`` on ``config.data`` with ``config.train.*``, logging the accuracy
on the test split per epoch in ``metrics.jsonl``; ``arch.json`` holds the architecture's
description.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import fileio, spaces, training
from hwnas_jax.errors import UserError


def _from_best_json(text: str) -> Any | None:
    """The genome of a search's best.json when ``text`` is such a file's path, else None."""
    if not text.endswith('.json') or not os.path.isfile(text):
        return None
    try:
        with open(text) as f:
            return json.load(f)['genome']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read the genome of {text} (a search's best.json): {e}") from None


def parse_genome(space, text: str | None) -> tuple[int, ...]:
    """The genome that ``config.space.genome`` names (see the module docstring).

    Raises:
      UserError: unset, unreadable or invalid text; the message says the accepted forms.
    """
    if not text or not str(text).strip():
        raise UserError(
            f'set the architecture to train with --config.space.genome: {space.genome_forms}; '
            "copy the 'genome' of a search's best.json (or give the path of that best.json)"
        )
    text = str(text).strip()
    value = _from_best_json(text)
    try:
        return space.parse_genome(text if value is None else json.dumps(value))
    except (ValueError, TypeError) as e:
        raise UserError(
            f'space.genome={text[:200]!r} is not a {space.name} architecture ({e}); expected '
            f"{space.genome_forms}, or the path of a search's best.json"
        ) from None


def train(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains the architecture ``config.space.genome`` from scratch in ``workdir`` (resumable).

    Writes ``arch.json`` (the architecture, its MACs/FLOPs and parameters), ``metrics.jsonl``
    and ``checkpoint.msgpack`` (``training.fit``).

    Returns:
      The last record of ``training.fit`` (test_accuracy in percent).

    Raises:
      UserError (DataError included): no or an invalid genome, an OFA resolution other than
        data.image_size, or missing data.
    """
    import jax

    space = spaces.make(config)
    space.validate_config(config)  # E.g. an OFA resolution other than data.image_size.
    genome = parse_genome(space, config.space.genome)
    kwargs = space.network_kwargs()
    module = space.exact_network(genome, backend=jax.default_backend())
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    arch = space.describe(genome)
    fileio.atomic_write_json(workdir / 'arch.json', arch, indent=2)
    cost = {k: arch[k] for k in ('macs', 'flops', 'params') if k in arch}
    logging.info('Architecture %s: %s', arch.get('arch_str') or arch.get('config'), cost)
    model = {'space': space.name, 'genome': list(genome), **kwargs}
    record = training.fit(
        module,
        config,
        workdir,
        model=model,
        name=f'the {space.name} '
        f'architecture ({", ".join(f"{k} {v:.4g} M" for k, v in cost.items())})',
    )
    logging.info('Test accuracy of the architecture: %.2f%%.', record.get('test_accuracy', np.nan))
    return record
