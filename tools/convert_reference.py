"""Converts akamaster's pretrained CIFAR-10 ResNet-20 (legacy torch.save) into a packaged npz.

Run (from the repository root; paths are arguments):
  python tools/convert_reference.py path/to/resnet20-12fca82f.th \
      [--license path/to/LICENSE-akamaster-pytorch_resnet_cifar10.txt] [--output hwnas_jax/assets]

Writes ``resnet20_cifar10.npz`` (flat keys such as ``params/stem_conv/kernel`` and
``batch_stats/stem_bn/mean``, float32, Flax layouts) and ``NOTICE-resnet20.txt`` (licence and
provenance). No torch is needed, and no pickled code runs: the file is a legacy (pre-1.6,
non-zip) torch.save stream, read as

  1. pickle: the magic number 0x1950a86a20f9469cfc6c;
  2. pickle: the protocol version 1001;
  3. pickle: system info (little-endian flag, type sizes);
  4. pickle: the object, whose tensors reference storages by persistent id
     ``('storage', storage_type, key, location, numel, view_metadata)``;
  5. pickle: the list of storage keys;
  6. per key, in that order: an int64 element count, then the raw little-endian elements.

The pickles go through a restricted unpickler: ``find_class`` allows only the few globals the
format needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor[_v2]``, the torch
``*Storage`` classes) and maps them to inert stand-ins; anything else is refused before it can run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import pathlib
import pickle
import struct
import sys
import zipfile

import numpy as np

SOURCE_SHA256 = '12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8'
SOURCE_REPO = 'https://github.com/akamaster/pytorch_resnet_cifar10'
SOURCE_COMMIT = 'd5489e8'
TRAINABLE_PARAMS = 269_722
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
NPZ_NAME = 'resnet20_cifar10.npz'
NOTICE_NAME = 'NOTICE-resnet20.txt'


class ConversionError(ValueError):
    """The input is not a valid, safe legacy torch.save file of the expected model."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: str  # numpy dtype string, little-endian.


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    storage_type: _StorageType
    numel: int
    view: tuple[str, int, int] | None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
    """Inert stand-in for torch._utils._rebuild_tensor(_v2): records where the data lies."""
    del unused  # requires_grad, backward hooks, metadata: irrelevant to the values.
    if not isinstance(storage, _StorageRef):
        raise ConversionError(f'tensor built from {type(storage).__name__}, not a storage')
    try:
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as e:
        raise ConversionError(f'malformed tensor metadata: {e}') from None
    return _TensorRef(storage, offset, size, stride)


_STORAGE_DTYPES = {
    'FloatStorage': '<f4',
    'DoubleStorage': '<f8',
    'HalfStorage': '<f2',
    'LongStorage': '<i8',
    'IntStorage': '<i4',
    'ShortStorage': '<i2',
    'CharStorage': 'i1',
    'ByteStorage': 'u1',
    'BoolStorage': '?',
}
_ALLOWED_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    **{('torch', n): _StorageType(n, d) for n, d in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals, to inert stand-ins."""

    def __init__(self, file: io.BytesIO):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(
                f'refusing to load global {module}.{name}: not part of a plain tensor checkpoint '
                '(the file may contain code; it was not run)'
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage'):
            raise ConversionError(f'unsupported persistent id {pid!r:.80}')
        _, storage_type, key, _, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise ConversionError(f'malformed storage reference {pid!r:.80}')
        if view is not None:
            view_key, view_offset, view_size = view
            view = (str(view_key), int(view_offset), int(view_size))
        ref = _StorageRef(key, storage_type, int(numel), view)
        known = self.storages.setdefault(key, ref)
        if (known.storage_type, known.numel) != (ref.storage_type, ref.numel):
            raise ConversionError(f'storage {key} declared twice with different types or sizes')
        return ref


def _unpickle(stream: io.BytesIO, what: str):
    unpickler = _RestrictedUnpickler(stream)
    try:
        return unpickler.load(), unpickler.storages
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001  (malformed bytes raise many types)
        raise ConversionError(f'corrupt or truncated file while reading the {what}: {e}') from None


def _materialise(tensor: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    data = storages[tensor.storage.key]
    if tensor.storage.view is not None:
        _, view_offset, view_size = tensor.storage.view
        data = data[view_offset : view_offset + view_size]
    # Gather through explicit indices (bounds-checked), never through as_strided.
    index = np.full(tensor.size, tensor.offset, dtype=np.int64)
    for axis, (n, s) in enumerate(zip(tensor.size, tensor.stride)):
        shape = [1] * len(tensor.size)
        shape[axis] = n
        index = index + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    if index.size and (index.min() < 0 or index.max() >= data.size):
        raise ConversionError(f'tensor of shape {tensor.size} reads outside its storage')
    return data[index]


def read_legacy_torch(data: bytes) -> dict:
    """Reads a legacy torch.save stream without running pickled code.

    Args:
      data: the file's bytes.

    Returns:
      The saved object with every tensor replaced by a numpy array.

    Raises:
      ConversionError: not a legacy torch.save file, corrupt, truncated, or referencing a global
        outside the allow-list.
    """
    stream = io.BytesIO(data)
    if data[:2] == b'PK':
        raise ConversionError('this is a zip-format torch.save file; expected the legacy format')
    magic, _ = _unpickle(stream, 'magic number')
    if magic != LEGACY_MAGIC:
        raise ConversionError('not a legacy torch.save file (wrong magic number)')
    protocol, _ = _unpickle(stream, 'protocol version')
    if protocol != LEGACY_PROTOCOL:
        raise ConversionError(f'unsupported torch.save protocol {protocol!r}')
    sys_info, _ = _unpickle(stream, 'system info')
    if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
        raise ConversionError('only little-endian legacy files are supported')
    obj, refs = _unpickle(stream, 'main object')
    keys, _ = _unpickle(stream, 'storage keys')
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConversionError('malformed storage key list')
    storages = {}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise ConversionError(f'truncated file: storage {key} is missing')
        (numel,) = struct.unpack('<q', header)
        ref = refs.get(key)
        if ref is None or ref.numel != numel:
            raise ConversionError(f'storage {key} does not match its reference in the pickle')
        dtype = np.dtype(ref.storage_type.dtype)
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ConversionError(f'truncated file: storage {key} is incomplete')
        storages[key] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder('='))
    if missing := set(refs) - set(storages):
        raise ConversionError(f'storages referenced but absent: {sorted(missing)[:3]}')
    if trailing := len(data) - stream.tell():
        raise ConversionError(f'{trailing} unexpected bytes after the last storage')

    def resolve(value):
        if isinstance(value, _TensorRef):
            return _materialise(value, storages)
        if isinstance(value, dict):
            return type(value)((k, resolve(v)) for k, v in value.items())
        return value

    return resolve(obj)


def expected_torch_shapes(depth: int = 20, num_classes: int = 10) -> dict[str, tuple[int, ...]]:
    """Names and shapes of akamaster's ResNet state dict (without the ``module.`` prefix)."""
    shapes = {'conv1.weight': (16, 3, 3, 3)}
    bn = ('weight', 'bias', 'running_mean', 'running_var')
    shapes.update({f'bn1.{p}': (16,) for p in bn})
    in_planes = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for block in range((depth - 2) // 6):
            prefix = f'layer{stage}.{block}'
            shapes[f'{prefix}.conv1.weight'] = (planes, in_planes, 3, 3)
            shapes[f'{prefix}.conv2.weight'] = (planes, planes, 3, 3)
            for i in (1, 2):
                shapes.update({f'{prefix}.bn{i}.{p}': (planes,) for p in bn})
            in_planes = planes
    shapes['linear.weight'] = (num_classes, 64)
    shapes['linear.bias'] = (num_classes,)
    return shapes


def to_flax(state_dict: dict[str, np.ndarray], depth: int = 20) -> dict[str, np.ndarray]:
    """Maps a PyTorch state dict to flat Flax variables (OIHW -> HWIO, [out, in] -> [in, out]).

    Args:
      state_dict: akamaster names (an optional ``module.`` prefix is removed) to arrays.
      depth: ResNet depth, 6n + 2.

    Returns:
      ``{'params/stem_conv/kernel': [3, 3, 3, 16], 'batch_stats/stem_bn/mean': [16], ...}``,
      float32.

    Raises:
      ConversionError: names or shapes differ from the expected ResNet.
    """
    tensors = {k.removeprefix('module.'): v for k, v in state_dict.items()}
    tensors = {k: v for k, v in tensors.items() if not k.endswith('num_batches_tracked')}
    expected = expected_torch_shapes(depth)
    if set(tensors) != set(expected):
        raise ConversionError(
            f'unexpected tensor names: missing {sorted(set(expected) - set(tensors))[:3]}, '
            f'extra {sorted(set(tensors) - set(expected))[:3]}'
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ConversionError(f'{name}: shape {tensors[name].shape}, expected {shape}')
    trainable = sum(v.size for k, v in tensors.items() if k.endswith(('weight', 'bias')))
    if depth == 20 and trainable != TRAINABLE_PARAMS:
        raise ConversionError(f'{trainable} trainable parameters, expected {TRAINABLE_PARAMS}')

    def module_name(torch_module: str) -> str:
        if torch_module in ('conv1', 'bn1'):
            return {'conv1': 'stem_conv', 'bn1': 'stem_bn'}[torch_module]
        stage, block, layer = torch_module.split('.')
        return f'stage{stage.removeprefix("layer")}_block{block}/{layer}'

    out = {}
    for name, value in tensors.items():
        value = np.asarray(value, dtype=np.float32)
        torch_module, field = name.rsplit('.', 1)
        if torch_module == 'linear':
            out[f'params/head/{"kernel" if field == "weight" else "bias"}'] = (
                value.T if field == 'weight' else value
            )
            continue
        module = module_name(torch_module)
        if field == 'weight' and value.ndim == 4:
            out[f'params/{module}/kernel'] = value.transpose(2, 3, 1, 0)
        else:
            collection, leaf = {
                'weight': ('params', 'scale'),
                'bias': ('params', 'bias'),
                'running_mean': ('batch_stats', 'mean'),
                'running_var': ('batch_stats', 'var'),
            }[field]
            out[f'{collection}/{module}/{leaf}'] = value
    return {k: np.ascontiguousarray(out[k]) for k in sorted(out)}


def write_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes an npz that np.load reads, byte-identical across runs (fixed timestamps, order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f'{key}.npy', date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue())
    tmp.replace(path)


def convert(source: pathlib.Path) -> tuple[dict[str, np.ndarray], float | None]:
    """Checks the source's sha256, reads it safely and converts it to flat Flax variables.

    Returns:
      The flat variables and the checkpoint's recorded top-1 accuracy (``best_prec1``), if any.

    Raises:
      ConversionError: wrong hash, unsafe or corrupt file, unexpected model.
    """
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise ConversionError(f'{source}: sha256 {digest}, expected {SOURCE_SHA256}')
    obj = read_legacy_torch(data)
    state_dict = obj.get('state_dict', obj) if isinstance(obj, dict) else None
    if not isinstance(state_dict, dict):
        raise ConversionError('the file holds no state dict')
    return to_flax(state_dict), obj.get('best_prec1')


NOTICE = """\
resnet20_cifar10.npz: pretrained CIFAR-10 ResNet-20 weights, converted for hwnas_jax.

Source: {repo} (commit {commit}), pretrained_models/resnet20-12fca82f.th
  sha256 {source_sha}; reported top-1 accuracy {prec1} % on the CIFAR-10 test set.
Converted file: resnet20_cifar10.npz, sha256 {npz_sha}.

Conversion (tools/convert_reference.py): the legacy torch.save stream was read with a restricted
unpickler that allows only collections.OrderedDict, torch._utils._rebuild_tensor and the torch
*Storage classes (mapped to inert stand-ins; no pickled code runs), and the raw little-endian
float32 storages that follow the pickles. The `module.` prefix was dropped and the tensors were
renamed to Flax variable paths (conv1 -> stem_conv, bn1 -> stem_bn, layerS.B -> stageS_block(B),
linear -> head), convolution kernels transposed from OIHW to HWIO, the linear weight from
[out, in] to [in, out], BatchNorm weight/bias -> params scale/bias and running_mean/running_var ->
batch_stats mean/var. Values are unchanged (float32). {params:,} trainable parameters.

The weights are distributed under the original licence:

{license}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('source', type=pathlib.Path, help='resnet20-12fca82f.th')
    parser.add_argument(
        '--license',
        type=pathlib.Path,
        help='licence text; default: LICENSE-akamaster-pytorch_resnet_cifar10.txt beside source',
    )
    parser.add_argument(
        '--output',
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parents[1] / 'hwnas_jax' / 'assets',
        help="output folder (default: the package's assets)",
    )
    args = parser.parse_args(argv)
    license_path = args.license or args.source.with_name(
        'LICENSE-akamaster-pytorch_resnet_cifar10.txt'
    )
    try:
        arrays, prec1 = convert(args.source)
        license_text = license_path.read_text()
    except (ConversionError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    npz = args.output / NPZ_NAME
    write_npz(npz, arrays)
    params = sum(v.size for k, v in arrays.items() if k.startswith('params/'))
    notice = NOTICE.format(
        repo=SOURCE_REPO,
        commit=SOURCE_COMMIT,
        source_sha=SOURCE_SHA256,
        prec1=f'{prec1:.2f}' if prec1 is not None else '(not recorded)',
        npz_sha=hashlib.sha256(npz.read_bytes()).hexdigest(),
        params=params,
        license=license_text.strip() + '\n',
    )
    (args.output / NOTICE_NAME).write_text(notice)
    print(f'wrote {npz} ({len(arrays)} arrays, {params:,} trainable parameters)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
