"""Tests of the CIFAR ResNet: shapes, parameter count, option-A shortcuts, PyTorch padding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from hwnas_jax.models.resnet import BasicBlock, ResNet, _conv3x3


def _init(module, shape=(2, 32, 32, 3)):
    return module.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False)


def test_resnet20_shapes_and_parameter_count():
    module = ResNet(depth=20, num_classes=10)
    variables = jax.eval_shape(lambda: _init(module))
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables['params']))
    assert n_params == 269_722  # akamaster's ResNet-20.
    (logits, features) = jax.eval_shape(
        lambda v, x: module.apply(v, x, train=False),
        variables,
        jax.ShapeDtypeStruct((5, 32, 32, 3), jnp.float32),
    )
    assert logits.shape == (5, 10)
    assert [f.shape for f in features] == [(5, 32, 32, 16), (5, 16, 16, 32), (5, 8, 8, 64)]
    names = set(traverse_util.flatten_dict(variables, sep='/'))
    assert 'params/stem_conv/kernel' in names and 'params/head/kernel' in names
    assert 'batch_stats/stage3_block2/bn2/var' in names
    assert not any('bias' in k and 'conv' in k for k in names)  # Convolutions have no bias.


def test_depth8_runs_in_train_mode_and_updates_batch_stats():
    module = ResNet(depth=8, num_classes=3)
    variables = jax.jit(lambda: _init(module, (4, 16, 16, 3)))()
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    apply = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=['batch_stats']))
    (logits, features), updates = apply(variables, x)
    assert logits.shape == (4, 3) and features[2].shape == (4, 4, 4, 64)
    old = variables['batch_stats']['stem_bn']['mean']
    new = updates['batch_stats']['stem_bn']['mean']
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch mean.
    assert not np.allclose(old, new)


@pytest.mark.parametrize('depth', [0, 7, 21])
def test_bad_depth_is_refused(depth):
    with pytest.raises(ValueError, match='6n \\+ 2'):
        _init(ResNet(depth=depth))


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = BasicBlock(planes=32, stride=2)
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 16))
    variables = block.init(jax.random.key(0), x, train=False)
    # Zero convolutions make the residual branch BN(0) = bias = 0: the output is the shortcut.
    params = jax.tree.map(jnp.zeros_like, variables['params'])
    out = block.apply({**variables, 'params': params}, x, train=False)
    expected = np.zeros((2, 4, 4, 32), np.float32)
    expected[..., 8:24] = np.maximum(np.asarray(x)[:, ::2, ::2, :], 0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_stride2_convolution_pads_like_pytorch():
    # PyTorch's padding=1 at stride 2 centres the windows on pixels 0, 2, 4, ...; with a kernel
    # that reads only its centre tap the output is x[::2, ::2] ('SAME' would give x[1::2, 1::2]).
    x = jax.random.normal(jax.random.key(3), (1, 8, 8, 16))
    kernel = np.zeros((3, 3, 16, 32), np.float32)
    kernel[1, 1, np.arange(16), np.arange(16)] = 1.0
    y = _conv3x3(32, 2, 'conv').apply({'params': {'kernel': kernel}}, x)
    assert y.shape == (1, 4, 4, 32)
    np.testing.assert_allclose(y[..., :16], np.asarray(x)[:, ::2, ::2, :], atol=1e-6)
