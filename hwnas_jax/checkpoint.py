"""Checkpoint files of ``training.fit``: msgpack state behind a header that records its digest.

Format: ``MAGIC``, then ``b"sha256 <64 hex digits>\\n"``, the sha256 of the payload, then the
payload: ``flax.serialization.msgpack_serialize`` of a dict (model description, step, params,
batch_stats, opt_state and the run's settings). Writes are atomic (a temp file in the same
folder, fsynced, then ``os.replace``). Reads check the digest, so a truncated or altered file is
refused with one ``UserError`` naming it instead of being loaded or raising msgpack's traceback.
Files without the header (written before it existed) load with a warning.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any

import flax
from absl import logging

from hwnas_jax import fileio
from hwnas_jax.errors import UserError

CHECKPOINT_NAME = 'checkpoint.msgpack'
MAGIC = b'hwnas_jax checkpoint v1\n'
_HEADER_SIZE = len(MAGIC) + len(b'sha256 ') + 64 + 1
REQUIRED = ('model', 'params', 'batch_stats')


def write(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` (a msgpack-able dict of host arrays) to ``path`` atomically."""
    body = flax.serialization.msgpack_serialize(state)
    header = MAGIC + b'sha256 ' + hashlib.sha256(body).hexdigest().encode() + b'\n'
    fileio.atomic_write_bytes(path, header + body)


def _payload(path: pathlib.Path, raw: bytes) -> bytes:
    """The msgpack payload of a checkpoint's bytes, after checking the digest in its header."""
    if raw.startswith(MAGIC):
        header, payload = raw[len(MAGIC) : _HEADER_SIZE], raw[_HEADER_SIZE:]
        digest = hashlib.sha256(payload).hexdigest().encode()
        if header == b'sha256 ' + digest + b'\n':
            return payload
    elif not MAGIC.startswith(raw[: len(MAGIC)]):  # Written before checkpoints had a digest.
        logging.warning('%s has no digest (an older hwnas_jax wrote it): not verified.', path)
        return raw
    raise UserError(
        f'{path}: checkpoint is damaged (truncated or altered: its bytes do not match the '
        'sha256 recorded when it was saved); restore a good copy, or delete it and train again'
    )


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a checkpoint (the file, or the workdir holding ``checkpoint.msgpack``).

    Returns:
      A dict with at least ``model`` (the JSON-able model description), ``params`` and
      ``batch_stats``.

    Raises:
      UserError: missing, unreadable, truncated, altered or corrupt file, or not such a
        checkpoint.
    """
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(
            f'cannot read checkpoint {path} ({e.strerror or e}): give a checkpoint.msgpack '
            "written by job 'train_reference' or 'train_arch', or the workdir holding it"
        ) from None
    payload = _payload(path, raw)
    try:
        state = flax.serialization.msgpack_restore(payload)
    except Exception as e:  # noqa: BLE001  (msgpack raises several types on corrupt input)
        raise UserError(f'{path}: checkpoint is corrupt ({e}); restore a good copy') from None
    if not isinstance(state, dict) or not set(REQUIRED) <= set(state):
        raise UserError(
            f'{path} is not a reference checkpoint (nor any checkpoint written by '
            "hwnas_jax.training: job 'train_reference' or 'train_arch')"
        )
    return state
