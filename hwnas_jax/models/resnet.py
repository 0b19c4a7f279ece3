"""CIFAR ResNet (6n + 2 layers) with "option A" shortcuts: the reference model of RMI-NAS.

A faithful NHWC port of the architecture of akamaster/pytorch_resnet_cifar10 (He et al. 2016,
Section 4.2), so that its pretrained ResNet-20 weights load unchanged:

- stem: 3x3 convolution to 16 channels (no bias), BatchNorm, ReLU;
- three stages of n basic blocks with 16, 32 and 64 channels; the first block of stages 2 and 3
  has stride 2;
- a basic block is conv3x3 - BN - ReLU - conv3x3 - BN, plus the shortcut, then ReLU;
- "option A" shortcut where the shape changes: no weights, the input is subsampled with stride 2
  (``x[:, ::2, ::2, :]``) and zero-padded with ``planes // 4`` channels on each side;
- global average pooling and a dense layer 64 -> classes.

BatchNorm uses PyTorch's defaults (eps 1e-5, momentum 0.1, i.e. Flax ``momentum=0.9``).
Convolutions pad one pixel on every side, as PyTorch's ``padding=1`` does; Flax's ``'SAME'``
would pad only the bottom/right side of an even input at stride 2 and shift the sampling grid.

References:
  He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". CVPR 2016.
  akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), ``resnet.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's nn.init.kaiming_normal_ (fan_in, gain sqrt(2), untruncated), as akamaster uses.
_kaiming_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

STAGE_CHANNELS = (16, 32, 64)


def _conv3x3(features: int, stride: int, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=_kaiming_normal,
        name=name,
    )


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or "option A" shortcut.

    Attributes:
      planes: output channels.
      stride: stride of the first convolution (1 or 2).
    """

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """Applies the block.

        Args:
          x: [n, h, w, c_in] input.
          train: use batch statistics (and update the running ones) when True.

        Returns:
          [n, h / stride, w / stride, planes] output, after the final ReLU.
        """
        y = _conv3x3(self.planes, self.stride, 'conv1')(x)
        y = nn.relu(_batch_norm(train, 'bn1')(y))
        y = _conv3x3(self.planes, 1, 'conv2')(y)
        y = _batch_norm(train, 'bn2')(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = x[:, :: self.stride, :: self.stride, :]
            pad = self.planes // 4
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (pad, pad)))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2 (ResNet-20: n = 3, 269,722 parameters for 10 classes).

    Attributes:
      depth: 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...).
      num_classes: outputs of the final dense layer.
    """

    depth: int = 20
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, list[jax.Array]]:
        """Runs the network.

        Args:
          x: [n, h, w, 3] normalised images (h = w = 32 for CIFAR).
          train: use batch statistics (and update the running ones) when True.

        Returns:
          ``(logits, features)``: logits [n, num_classes] and the three stage outputs, each after
          its last block's ReLU: [n, h, w, 16], [n, h/2, w/2, 32], [n, h/4, w/4, 64].

        Raises:
          ValueError: if ``depth`` is not of the form 6n + 2 with n >= 1.
        """
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f'ResNet depth must be 6n + 2 with n >= 1, got {self.depth}')
        blocks = (self.depth - 2) // 6
        y = _conv3x3(STAGE_CHANNELS[0], 1, 'stem_conv')(x)
        y = nn.relu(_batch_norm(train, 'stem_bn')(y))
        features = []
        for stage, planes in enumerate(STAGE_CHANNELS, start=1):
            for block in range(blocks):
                stride = 2 if stage > 1 and block == 0 else 1
                y = BasicBlock(planes, stride, name=f'stage{stage}_block{block}')(y, train=train)
            features.append(y)
        y = jnp.mean(y, axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=_kaiming_normal, name='head')(y)
        return logits, features
