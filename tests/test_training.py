"""Tests of the shared training loop (any Flax classifier) and of resizing images to the model."""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict
from PIL import Image

from configs import base
from hwnas_jax import data, training


class Tiny(nn.Module):
    """A small classifier with the (x, *, train) -> (logits, features) contract."""

    num_classes: int = 3
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x, *, train):
        h = nn.Conv(4, (3, 3), strides=2, name="conv")(x)
        if self.batch_norm:
            h = nn.BatchNorm(use_running_average=not train, name="bn")(h)
        h = nn.relu(h)
        return nn.Dense(self.num_classes, name="head")(h.mean(axis=(1, 2))), [h]


def _folder(root: pathlib.Path, size: int = 32) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(("a", "b", "c")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 64, (size, size, 3)) + 60 * label
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


def _config(root, *, image_size=16, max_steps=0, seed=0) -> config_dict.ConfigDict:
    config = base.get_config()
    config.seed = seed
    config.data.update(source="folder", root=str(root), num_classes=3, image_size=image_size)
    config.data.resize = True  # New field (configs/base.py may not have it yet).
    config.train.update(epochs=2, batch_size=4, max_steps=max_steps, learning_rate=0.05)
    return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("folder"))


def test_resize_and_load_split_at_the_configured_size(folder):
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    small = data.resize(images, 16)
    assert small.shape == (2, 16, 16, 3) and small.dtype == np.uint8
    assert data.resize(images, 32) is images
    flat = np.full((1, 8, 8, 3), 77, np.uint8)  # A constant image stays constant.
    np.testing.assert_array_equal(data.resize(flat, 24), 77)
    config = _config(folder)
    assert data.load_split(config.data, "train")[0].shape == (12, 16, 16, 3)
    assert data.load_split(config.data, "train", stored_size=True)[0].shape == (12, 32, 32, 3)
    pool, labels = data.random_pool(config, np.random.default_rng(0), 5)
    assert pool.shape == (5, 16, 16, 3) and len(labels) == 5
    config.data.resize = False
    with pytest.raises(data.DataError, match="data.resize"):
        data.load_split(config.data, "train")


def test_fit_trains_any_module_and_resumes_exactly(folder, tmp_path):
    # 12 images, batches of 4: 3 steps per epoch, 6 in all, at 16 px resized from 32.
    model = {"kind": "tiny", "classes": (3,)}
    straight = training.fit(Tiny(), _config(folder), tmp_path / "a", model=model, name="tiny")
    first = training.fit(Tiny(), _config(folder, max_steps=4), tmp_path / "b", model=model,
                         name="tiny")  # fmt: skip
    assert first["step"] == 4 and "test_accuracy" in first
    resumed = training.fit(Tiny(), _config(folder), tmp_path / "b", model=model, name="tiny")
    assert straight["step"] == resumed["step"] == 6
    assert resumed["test_accuracy"] == pytest.approx(straight["test_accuracy"])
    a, b = (training.read_checkpoint(tmp_path / d) for d in "ab")
    assert a["model"] == {"kind": "tiny", "classes": [3]}
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_array_equal(x, y)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == [3, 4, 6]
    with pytest.raises(ValueError, match="different run"):
        training.fit(Tiny(), _config(folder), tmp_path / "b", model={"kind": "other"},
                     name="tiny")  # fmt: skip
    with pytest.raises(ValueError, match="different run"):
        training.fit(Tiny(), _config(folder, seed=1), tmp_path / "b", model=model, name="tiny")


def test_fit_without_batch_norm_and_evaluate(folder, tmp_path):
    module = Tiny(batch_norm=False)
    record = training.fit(module, _config(folder, max_steps=1), tmp_path, model={}, name="no bn")
    assert record["step"] == 1 and np.isfinite(record["train_loss"])
    state = training.read_checkpoint(tmp_path)
    variables = {"params": jax.tree.map(jnp.asarray, state["params"])}
    images, labels = data.load_split(_config(folder).data, "test")
    result = training.evaluate(module, variables, images, labels, batch_size=4)
    assert result["accuracy"] == pytest.approx(record["test_accuracy"])
    assert result["loss"] == pytest.approx(record["test_loss"], rel=1e-5)


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        training.read_checkpoint(tmp_path)
    (tmp_path / training.CHECKPOINT_NAME).write_bytes(b"\x81\xa1a\x01")  # msgpack {'a': 1}
    with pytest.raises(ValueError, match="not a reference checkpoint"):
        training.read_checkpoint(tmp_path)


def test_to_variables_checks_names_and_shapes():
    shapes = training.flat_shapes(Tiny(), 8)
    assert shapes["params/conv/kernel"] == (3, 3, 3, 4) and "batch_stats/bn/mean" in shapes
    flat = {k: np.zeros(s) for k, s in shapes.items()}
    variables = training.to_variables(shapes, flat, "x")
    assert variables["params"]["head"]["kernel"].dtype == jnp.float32
    with pytest.raises(ValueError, match="missing"):
        training.to_variables(shapes, {k: v for k, v in flat.items() if "head" not in k}, "x")
    flat["params/conv/kernel"] = np.zeros((1, 1, 3, 4))
    with pytest.raises(ValueError, match="has shape"):
        training.to_variables(shapes, flat, "x")
