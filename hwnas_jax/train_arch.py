"""Trains an architecture a search found, from scratch, to measure its real accuracy.

``config.space.genome`` names the architecture, as text:
  nb201: a NAS-Bench-201 arch string ``|nor_conv_3x3~0|+|...|`` or a JSON list of 6 op indices;
  ofa: an OFA subnet config ``{"ks": [20], "e": [20], "d": [5]}`` or a JSON list of 45 gene
    indices;
  either: the path of a search's ``best.json`` (its ``genome``).
The exact ``Network`` of that genome (``space.*`` and ``data.num_classes`` give its size) is
trained with ``training.fit`` on ``config.data`` with ``config.train.*``, logging the test
accuracy per epoch in ``metrics.jsonl``; ``arch.json`` holds the architecture's description.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
from absl import logging

from hwnas_jax import spaces, training

FORMS = {
    "nb201": "an arch string like '|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|...|' or "
    "a JSON list of 6 op indices",
    "ofa": "an OFA config JSON '{\"ks\": [20 kernels], \"e\": [20 expands], \"d\": [5 depths]}' "
    "or a JSON list of 45 gene indices",
}


def _from_best_json(text: str) -> Any | None:
    """The genome of a search's best.json when ``text`` is such a file's path, else None."""
    if not text.endswith(".json") or not os.path.isfile(text):
        return None
    try:
        with open(text) as f:
            return json.load(f)["genome"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read the genome of {text} (a search's best.json): {e}") from None


def parse_genome(space_name: str, text: str | None) -> tuple[int, ...]:
    """The genome that ``config.space.genome`` names (see the module docstring).

    Raises:
      ValueError: unset, unreadable or invalid text; the message says the accepted forms.
    """
    space = spaces.get(space_name)
    if not text or not str(text).strip():
        raise ValueError(
            f"set the architecture to train with --config.space.genome: {FORMS[space_name]}; "
            "copy the 'genome' of a search's best.json (or give the path of that best.json)"
        )
    text = str(text).strip()
    value = _from_best_json(text)
    try:
        if value is None and space_name == "nb201" and text.startswith("|"):
            return tuple(space.from_arch_str(text))
        if value is None:
            value = json.loads(text)
        if space_name == "ofa" and isinstance(value, dict):
            value = space.from_config(value)
        if not isinstance(value, (list, np.ndarray)):
            raise TypeError(f"got a {type(value).__name__}")
        return tuple(int(v) for v in space.validate(np.asarray(value)))
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"space.genome={text[:200]!r} is not a {space_name} architecture ({e}); expected "
            f"{FORMS[space_name]}, or the path of a search's best.json"
        ) from None


def model_kwargs(config: Any, space: Any) -> dict[str, Any]:
    """Constructor arguments of ``space.Network`` besides the genome (as the search's)."""
    from hwnas_jax import proxy

    return proxy.model_kwargs(config, space)


def describe(config: Any, space: Any, genome: Any) -> dict[str, Any]:
    """``space.describe`` of a genome at the config's network size (OFA: resolution, width)."""
    if space.NAME == "ofa":
        return space.describe(
            genome, num_classes=config.data.num_classes, resolution=config.space.resolution,
            width_mult=config.space.width_mult,
        )  # fmt: skip
    return space.describe(genome, num_classes=config.data.num_classes)


def train(config: Any, workdir: str | os.PathLike) -> dict[str, float]:
    """Trains the architecture ``config.space.genome`` from scratch in ``workdir`` (resumable).

    Writes ``arch.json`` (the architecture, its MACs/FLOPs and parameters), ``metrics.jsonl``
    and ``checkpoint.msgpack`` (``training.fit``).

    Returns:
      The last record of ``training.fit`` (test_accuracy in percent).

    Raises:
      ValueError: no or an invalid genome, or an OFA resolution other than data.image_size.
      DataError: missing data.
    """
    space = spaces.get(config.space.name)
    genome = parse_genome(space.NAME, config.space.genome)
    if space.NAME == "ofa" and config.space.resolution != config.data.image_size:
        raise ValueError(
            f"space.resolution={config.space.resolution} but data.image_size="
            f"{config.data.image_size}: set both to the same value (and "
            "--config.data.resize=True to resize the stored images)"
        )
    kwargs = model_kwargs(config, space)
    module = space.Network(genome=genome, **kwargs)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    arch = describe(config, space, genome)
    tmp = workdir / "arch.json.tmp"
    tmp.write_text(json.dumps(arch, indent=2) + "\n")
    os.replace(tmp, workdir / "arch.json")
    cost = {k: arch[k] for k in ("macs", "flops", "params") if k in arch}
    logging.info("Architecture %s: %s", arch.get("arch_str") or arch.get("config"), cost)
    model = {"space": space.NAME, "genome": list(genome), **kwargs}
    record = training.fit(module, config, workdir, model=model, name=f"the {space.NAME} "
                          f"architecture ({', '.join(f'{k} {v:.4g} M' for k, v in cost.items())})")
    logging.info("Test accuracy of the architecture: %.2f%%.", record.get("test_accuracy", np.nan))
    return record
