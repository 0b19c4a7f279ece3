"""The library's user-error type: bad input that the person running hwnas_jax can fix.

`launch.py` prints a `UserError` as one `error:` line and exits with code 2; every other
exception is a bug and keeps its traceback. It subclasses `ValueError` so that API callers who
catch `ValueError` keep working.
"""


class UserError(ValueError):
    """Bad input (config field, file, dataset, genome, shapes); the message says what to do."""
