"""Shared test fixtures: CPU only, and the location of the optional shared data folder."""

import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# XLA:CPU's cheapest compile settings: most of these tests' time is compilation of tiny
# networks. Subprocesses (the launch.py tests) inherit them, so in-process and launched runs
# still compute the same numbers.
os.environ.setdefault(
    'XLA_FLAGS', '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
    """The shared data folder next to the repository; skips the test where it is absent."""
    if not SHARED.is_dir():
        pytest.skip('shared data folder not present next to the repository')
    return SHARED
