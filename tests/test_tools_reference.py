"""Tests of tools/convert_reference.py: exact reproduction, and refusal of unsafe or bad files."""

import importlib.util
import os
import pathlib
import pickle
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ASSET = REPO / 'hwnas_jax' / 'assets' / 'resnet20_cifar10.npz'


@pytest.fixture(scope='module')
def tool():
    path = REPO / 'tools' / 'convert_reference.py'
    spec = importlib.util.spec_from_file_location('convert_reference', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Its dataclasses look their module up there.
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope='module')
def source(shared_data) -> pathlib.Path:
    return shared_data / 'reference' / 'resnet20-12fca82f.th'


def _legacy_header() -> bytes:
    """The three small pickles that open a legacy torch.save stream."""
    return b''.join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {'protocol_version': 1001, 'little_endian': True})
    )


class _RunsCode:
    """Unpickling this with the standard unpickler would run a shell command."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.shared
def test_converter_reproduces_the_packaged_npz(tool, source, tmp_path):
    assert tool.main([str(source), '--output', str(tmp_path)]) == 0
    with np.load(tmp_path / 'resnet20_cifar10.npz') as new, np.load(ASSET) as packaged:
        assert sorted(new.files) == sorted(packaged.files)
        for key in packaged.files:
            assert new[key].dtype == packaged[key].dtype == np.float32
            np.testing.assert_array_equal(new[key], packaged[key], err_msg=key)
        params = sum(new[k].size for k in new.files if k.startswith('params/'))
    assert params == 269_722
    assert (tmp_path / 'resnet20_cifar10.npz').read_bytes() == ASSET.read_bytes()  # Deterministic.
    notice = (tmp_path / 'NOTICE-resnet20.txt').read_text()
    assert tool.SOURCE_SHA256 in notice and 'd5489e8' in notice
    assert 'Redistribution and use in source and binary forms' in notice  # BSD-2-Clause text.


@pytest.mark.shared
def test_reader_returns_pytorch_names_and_layouts(tool, source):
    obj = tool.read_legacy_torch(source.read_bytes())
    assert obj['best_prec1'] == pytest.approx(91.78, abs=1e-4)
    state = {k.removeprefix('module.'): v for k, v in obj['state_dict'].items()}
    expected = tool.expected_torch_shapes(20)
    assert {k: v.shape for k, v in state.items()} == expected
    flat = tool.to_flax(obj['state_dict'])
    np.testing.assert_array_equal(
        flat['params/stem_conv/kernel'], state['conv1.weight'].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(flat['params/head/kernel'], state['linear.weight'].T)
    np.testing.assert_array_equal(
        flat['batch_stats/stage2_block0/bn1/var'], state['layer2.0.bn1.running_var']
    )


@pytest.mark.shared
@pytest.mark.parametrize('keep', [100, 5_000, 14_100, -4])
def test_truncated_file_is_refused(tool, source, keep):
    data = source.read_bytes()[:keep]
    with pytest.raises(tool.ConversionError, match='truncated'):
        tool.read_legacy_torch(data)


@pytest.mark.shared
def test_trailing_bytes_and_wrong_hash_are_refused(tool, source, tmp_path):
    data = source.read_bytes()
    with pytest.raises(tool.ConversionError, match='unexpected bytes'):
        tool.read_legacy_torch(data + b'\0')
    copy = tmp_path / 'copy.th'
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(tool.ConversionError, match='sha256'):
        tool.convert(copy)


@pytest.mark.parametrize('position', ['magic', 'main'])
def test_forbidden_global_is_refused_and_nothing_runs(tool, tmp_path, position):
    marker = tmp_path / 'ran'
    evil = pickle.dumps(_RunsCode(marker), protocol=2)
    data = evil if position == 'magic' else _legacy_header() + evil
    with pytest.raises(tool.ConversionError, match='refusing to load global .*system'):
        tool.read_legacy_torch(data)
    assert not marker.exists()


def test_allowed_globals_only_build_inert_records(tool):
    # Hand-written pickle opcodes: _rebuild_tensor('x', 0, (1,), (1,)), then a persistent id
    # that is not a storage reference.
    rebuild = (
        b'\x80\x02ctorch._utils\n_rebuild_tensor\n(X\x01\x00\x00\x00xK\x00K\x01\x85K\x01\x85tR.'
    )
    with pytest.raises(tool.ConversionError, match='not a storage'):
        tool.read_legacy_torch(_legacy_header() + rebuild)
    persistent = b'\x80\x02X\x03\x00\x00\x00abcQ.'
    with pytest.raises(tool.ConversionError, match='unsupported persistent id'):
        tool.read_legacy_torch(_legacy_header() + persistent)


def test_not_a_legacy_file_is_refused(tool):
    with pytest.raises(tool.ConversionError, match='zip-format'):
        tool.read_legacy_torch(b'PK\x03\x04rest')
    with pytest.raises(tool.ConversionError, match='magic'):
        tool.read_legacy_torch(pickle.dumps(12345, protocol=2))


def test_unexpected_names_or_shapes_are_refused(tool):
    shapes = tool.expected_torch_shapes(20)
    state = {f'module.{k}': np.zeros(v, np.float32) for k, v in shapes.items()}
    assert len(tool.to_flax(state)) == len(shapes)
    wrong = dict(state, **{'module.linear.weight': np.zeros((10, 32), np.float32)})
    with pytest.raises(tool.ConversionError, match='linear.weight'):
        tool.to_flax(wrong)
    with pytest.raises(tool.ConversionError, match='missing'):
        tool.to_flax({k: v for k, v in state.items() if 'layer3' not in k})


def test_cli_reports_errors_without_traceback(tool, tmp_path, capsys):
    bad = tmp_path / 'bad.th'
    bad.write_bytes(b'garbage')
    assert tool.main([str(bad), '--output', str(tmp_path / 'out')]) == 1
    assert 'error:' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
