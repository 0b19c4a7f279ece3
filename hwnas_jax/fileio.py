"""Small, safe file I/O: atomic fsynced writes, checked npz/JSON reads, packaged-asset digests.

Every write goes to a temporary file in the same directory, is fsynced, then `os.replace`d over
the target, so a reader (or a resumed run after `kill -9`) sees the old file or the new one,
never a mix. Every read of a file that may be damaged or foreign raises one `UserError` naming
the file and what to do, instead of the parser's traceback; npz files are never read with
pickle allowed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import io
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from hwnas_jax.errors import UserError

PathLike = str | os.PathLike


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = os.fspath(path)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (temp file, fsync, rename)."""
    atomic_write_bytes(path, text.encode())


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats replaced by None, so that it is valid (strict) JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """Strict JSON text of `obj` (NaN and infinities become null)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = None) -> None:
    """Writes `obj` as strict JSON (non-finite floats as null) to `path` atomically."""
    atomic_write_text(path, dumps(obj, indent=indent, sort_keys=indent is not None) + '\n')


def atomic_write_npz(path: PathLike, *, compressed: bool = False, **arrays) -> None:
    """Writes `arrays` as an npz to `path` atomically."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_figure(path: PathLike, fig, *, dpi: int = 100) -> None:
    """Writes a matplotlib figure as PNG to `path` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def csv_text(rows, fieldnames) -> str:
    """CSV text (header and rows) of dicts, for :func:`atomic_write_text`."""
    import csv

    buf = io.StringIO(newline='')
    writer = csv.DictWriter(buf, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of the bytes of `path`."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def load_npz(source, *, what: str, fix: str, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """All arrays of an npz file (a path or a binary file object), never unpickling.

    Args:
      source: path or binary file object.
      what: what the file is, for the message (e.g. 'the search batch').
      fix: what the user should do when it is damaged (e.g. 'delete it to rebuild it').
      keys: arrays that must be present.

    Raises:
      UserError: the file is missing, truncated, corrupt, holds pickled objects or lacks `keys`.
    """
    is_path = isinstance(source, (str, os.PathLike))
    name = os.fspath(source) if is_path else getattr(source, 'name', what)
    try:
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open(source, 'rb')) if is_path else source
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError('a single array, not an npz archive')
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except FileNotFoundError:
        raise UserError(f'{name}: {what} not found; {fix}') from None
    except IsADirectoryError:
        raise UserError(f'{name}: {what} is a folder, not a file; {fix}') from None
    except Exception as e:  # noqa: BLE001 - any parse failure of a damaged file is this error.
        # Seen: BadZipFile, zlib.error, EOFError, NotImplementedError/RuntimeError (a damaged
        # member header), SyntaxError/TokenError (a damaged array header), ValueError (numpy's
        # "pickled data" for bytes that are no npy/npz at all: hwnas_jax never unpickles).
        text = str(e)
        reason = (
            'it holds pickled objects'
            if 'Object arrays' in text
            else 'not an npz archive'
            if 'pickle' in text
            else text.splitlines()[0]
            if text
            else type(e).__name__
        )
        raise UserError(
            f'{name}: {what} is damaged or not an hwnas_jax file ({reason}); {fix}'
        ) from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise UserError(f'{name}: {what} lacks the arrays {missing}; {fix}')
    return arrays


def load_json(path: PathLike, *, what: str, fix: str) -> Any:
    """The JSON content of `path`; one `UserError` naming the file if it is missing or damaged."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f'{path}: {what} not found; {fix}') from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f'{path}: {what} is damaged ({e}); {fix}') from None


def asset_path(name: str) -> pathlib.Path:
    """Path of the packaged asset `name` (in hwnas_jax/assets)."""
    return pathlib.Path(str(importlib.resources.files('hwnas_jax') / 'assets' / name))


def checked_asset(name: str, sha256: str) -> pathlib.Path:
    """Path of packaged asset `name` after checking its file digest.

    Raises:
      UserError: the asset is missing or its bytes differ from the release's (reinstall).
    """
    path = asset_path(name)
    fix = (
        'reinstall hwnas_jax (pip install --force-reinstall --no-deps hwnas_jax, or git '
        'checkout the file)'
    )
    if not path.is_file():
        raise UserError(f'{path}: packaged asset missing; {fix}')
    got = sha256_file(path)
    if got != sha256:
        raise UserError(
            f'{path}: packaged asset changed (sha256 {got[:12]}..., expected '
            f'{sha256[:12]}...); {fix}'
        )
    return path
