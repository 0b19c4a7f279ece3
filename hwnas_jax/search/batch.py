"""The search's one training batch: drawn once, chosen by the reference, saved with the run.

RMI-NAS's choice: `proxy.pool_size` random augmented training images, of which the
`proxy.batch_size` with the lowest reference cross-entropy are kept. The batch is saved in the
work directory with the fingerprint of the settings that drew it, so a resumed search trains on
exactly the same images and a file left by a run with other settings is rebuilt, never reused.
In a multi-process search the primary process writes the file and every process trains on the
primary's batch and reference features, bit for bit (:func:`hwnas_jax.distributed.broadcast`).
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from hwnas_jax import distributed, fileio
from hwnas_jax.errors import UserError


def select_batch(images: np.ndarray, labels: np.ndarray, ce: np.ndarray, size: int) -> np.ndarray:
    """Indices of the `size` examples with the lowest reference cross-entropy (RMI-NAS)."""
    if size > len(images):
        raise UserError(f'proxy.batch_size={size} exceeds proxy.pool_size={len(images)}')
    return np.argsort(ce, kind='stable')[:size]


def batch_fingerprint(config, seed: int) -> str:
    """The settings that make the search batch: a batch file made with others is stale."""
    return json.dumps(
        {
            'seed': int(seed),
            'data': config.data.to_dict(),
            'reference': config.reference.to_dict(),
            'batch_size': config.proxy.batch_size,
            'pool_size': config.proxy.pool_size,
        },
        sort_keys=True,
    )


def batch_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of the batch's images and labels (recorded in the search state)."""
    h = hashlib.sha256()
    for a in (images, labels):
        a = np.ascontiguousarray(a)
        h.update(f'{a.dtype.str}{a.shape}'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_or_make_batch(config, path: str, seed: int | None = None) -> dict:
    """The search's one training batch and the reference's features on it.

    Made once per search (drawn with the seed and saved to `path` with the fingerprint of the
    settings that made it, so a resumed search trains on exactly the same images and a file
    left by a run with other settings is rebuilt, never reused): `proxy.pool_size` random
    augmented training images, of which the `proxy.batch_size` with the lowest reference
    cross-entropy are kept. The result's 'digest' identifies the batch.
    """
    from hwnas_jax import data, reference

    module, variables = reference.load(config)
    feature_fn = reference.make_feature_fn(module, variables, bn_mode=config.reference.bn_mode)
    seed = config.seed if seed is None else seed
    fingerprint = batch_fingerprint(config, seed)
    images = None
    if os.path.exists(path):
        saved = fileio.load_npz(
            path,
            what='the search batch',
            keys=('images', 'labels'),
            fix='delete it: the search rebuilds it from the seed',
        )
        if str(saved.get('fingerprint', '')) == fingerprint:
            images, labels = saved['images'], saved['labels']
        else:
            logging.warning(
                '%s was made with other settings (an earlier run in this work '
                'directory); making the batch again',
                path,
            )
    if images is None:
        rng = np.random.default_rng([seed, 1])
        pool_images, pool_labels = data.random_pool(config, rng, config.proxy.pool_size)
        # In chunks: the pool can be large images through a large reference.
        logits = np.concatenate(
            [
                np.asarray(feature_fn(data.normalize(pool_images[i : i + 64]))[0])
                for i in range(0, len(pool_images), 64)
            ]
        )
        logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
        ce = -np.asarray(jnp.take_along_axis(logp, jnp.asarray(pool_labels)[:, None], 1))[:, 0]
        idx = select_batch(pool_images, pool_labels, ce, config.proxy.batch_size)
        images, labels = pool_images[idx], pool_labels[idx]
        if distributed.is_primary():
            fileio.atomic_write_npz(
                path, images=images, labels=labels, fingerprint=np.asarray(fingerprint)
            )
    x = data.normalize(images)
    _, feats = feature_fn(x)
    # Several processes: the primary's batch everywhere, whatever each found or computed.
    images, labels, x, feats = distributed.broadcast(
        (images, labels, x, [np.asarray(f) for f in feats])
    )
    return {
        'images': x,
        'labels': labels.astype(np.int32),
        'ref_features': feats,
        'digest': batch_digest(images, labels),
    }
