"""Entry point: python launch.py --config configs/X.py [--config.a.b=value] [--workdir DIR].

Runs the job named by `config.job` (search, train_reference, train_arch, figure5) in a work
directory (default workdirs/<config>-<timestamp>). Rerunning with the same --workdir resumes
where the last run stopped. `--help_configs` lists the configs.
"""

import contextlib
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config',
    None,
    'Experiment config, e.g. configs/nb201_latency.py (file.py:variant for a '
    'variant); --help_configs lists them, hwnas_jax/config.py has every field.',
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Work directory; default workdirs/<config>-<timestamp>.'
)
_TRACEBACK = flags.DEFINE_bool(
    'traceback', False, 'Show the full traceback of a user error (for bug reports).'
)
flags.DEFINE_bool('help_configs', False, 'List the configs in configs/ and exit.')


def _error(message: str) -> None:
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's flag parsing, with config-file and override errors as one line."""
    from hwnas_jax import cli

    try:
        rest = flags.FLAGS(argv)
        if flags.FLAGS.help_configs:
            print(cli.list_configs())
            sys.exit(0)
        filename = flags.FLAGS['config'].value and config_flags.get_config_filename(
            flags.FLAGS['config']
        )
        if filename and not os.path.isfile(filename.partition(':')[0]):
            raise FileNotFoundError(filename)
        if filename:
            _ = _CONFIG.value  # Loads the file and applies the overrides.
        return rest
    except Exception as e:  # noqa: BLE001 - every config error becomes one line.
        if '--traceback' in argv:
            raise
        _error(cli.config_error(e, argv))


# The work directory in use: with several processes, the primary's (its default name has a
# timestamp), so that every process's Ctrl-C message names the same directory.
_IN_USE: list[str] = []


class _NoAcceleratorProbe(std_logging.Filter):
    """Drops JAX's INFO line about a TPU runtime it did not find (every CPU or GPU run).

    The run says which backend it uses in its own line; a probe's failure is not news.
    """

    def filter(self, record) -> bool:
        return not (
            record.levelno <= std_logging.INFO
            and record.getMessage().startswith('Unable to initialize backend')
        )


def _run(config, workdir: str) -> None:
    # Imported here so that --help and config errors do not pay for importing JAX.
    std_logging.getLogger('jax._src.xla_bridge').addFilter(_NoAcceleratorProbe())
    import jax

    from hwnas_jax import compile_log, distributed, jobs
    from hwnas_jax import workdir as wd

    # Several processes when the environment asks (README: Several processes or machines):
    # before anything touches a device. The primary alone holds the lock and writes files.
    several = distributed.initialize()
    if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
        # A resumed or repeated search does not pay for compiling its networks again.
        jax.config.update('jax_compilation_cache_dir', os.path.join(compile_log.cache_dir(), 'xla'))
    if several:
        workdir = distributed.broadcast_object(workdir)  # A default name has a timestamp.
        _IN_USE.append(workdir)
    with contextlib.ExitStack() as held:
        distributed.on_primary(lambda: held.enter_context(wd.lock(workdir)))
        logging.info('Work directory: %s', workdir)
        backend = jax.default_backend()
        logging.info(
            'JAX %s, backend %s%s, devices %s',
            jax.__version__,
            backend,
            " (no GPU or TPU found; for an NVIDIA GPU: pip install -e '.[cuda]')"
            if backend == 'cpu'
            else '',
            jax.devices(),
        )
        if distributed.process_count() > 1:
            distributed.log_processes()
        jobs.check(config, workdir)  # Refuses a resume of other settings before writing.
        if distributed.is_primary():
            wd.record(config, workdir)
        logging.debug('Config:\n%s', config)
        jobs.run(config, workdir)


def main(argv) -> None:
    from hwnas_jax import config as config_lib
    from hwnas_jax import workdir as wd
    from hwnas_jax.errors import UserError

    if len(argv) > 1:
        _error(f'unexpected arguments {argv[1:]}; overrides look like --config.proxy.steps=10')
    config = _CONFIG.value
    if config is None:
        _error(
            '--config is required, e.g. python launch.py --config configs/nb201_latency.py '
            '(--help_configs lists the configs)'
        )
    workdir = _WORKDIR.value or wd.default(config_flags.get_config_filename(flags.FLAGS['config']))
    try:
        config_lib.validate(config)
        _run(config, workdir)
    except UserError as e:  # Bad input; anything else is a bug and keeps its traceback.
        if _TRACEBACK.value:
            raise
        logging.flush()
        _error(str(e))
    except KeyboardInterrupt:
        logging.flush()
        print(
            f'interrupted; resume with: {wd.resume_command((_IN_USE or [workdir])[-1])}',
            file=sys.stderr,
            flush=True,
        )
        # A worker thread may still be inside XLA: leave without waiting for it. Every file
        # the run wrote is complete (atomic writes), so nothing is lost but the member in flight.
        os._exit(130)


if __name__ == '__main__':
    app.run(main, flags_parser=_parse_flags)
