"""A run's work directory: its default name, its lock, and the record of the command.

One work directory holds one run at a time: `lock` takes an exclusive `flock` on
`<workdir>/.lock` for the life of the process, so a second run there refuses at once with a
message naming the first, and the operating system drops the lock of a killed run, so a resume
is never blocked by a stale file.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import pathlib
import shlex
import socket
import sys

from hwnas_jax import fileio
from hwnas_jax.errors import UserError


def default(config_arg: str | None) -> str:
    """`workdirs/<config>[-<variant>]-<timestamp>` for `--config configs/x.py[:variant]`."""
    path, _, variant = (config_arg or 'config').partition(':')
    name = pathlib.Path(path).stem + (f'-{variant}' if variant else '')
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    return os.path.join('workdirs', f'{name}-{stamp}')


@contextlib.contextmanager
def lock(workdir: str):
    """Holds `workdir` for this process; UserError if another live run holds it."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot create the work directory {workdir}: {e.strerror}') from None
    path = os.path.join(workdir, '.lock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            with open(path) as f:
                holder = f.read().strip() or 'another process'
            raise UserError(
                f'{workdir} is in use by another run ({holder}); wait for it to '
                'end, or use another --workdir'
            ) from None
        info = (
            f'pid {os.getpid()} on {socket.gethostname()}, started '
            f'{datetime.datetime.now():%Y-%m-%d %H:%M:%S}: {" ".join(sys.argv)}'
        )
        os.ftruncate(fd, 0)
        os.write(fd, info.encode())
        yield
    finally:
        os.close(fd)  # Releases the lock.


def record(config, workdir: str) -> None:
    """Writes config.json (the config of this run) and appends the command to command.txt."""
    fileio.atomic_write_json(os.path.join(workdir, 'config.json'), config.to_dict(), indent=2)
    with open(os.path.join(workdir, 'command.txt'), 'a') as f:
        f.write(' '.join(sys.argv) + '\n')


def resume_command(workdir: str) -> str:
    """The command line that resumes this run in `workdir` (this command, that --workdir)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ('--workdir', '-workdir'):
            skip = True
        elif not a.startswith(('--workdir=', '-workdir=')):
            args.append(a)
    return shlex.join(['python', sys.argv[0], *args, f'--workdir={workdir}'])
