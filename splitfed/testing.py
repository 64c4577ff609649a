"""What the tests use: a whole protocol in threads of one process.

:func:`run_in_threads` lives in :mod:`splitfed.runtime.threads` (``splitfed.run(...,
in_process=True)`` runs on it too); the fuzzing strangers are in :mod:`splitfed.fuzzing`.
"""

from splitfed.runtime.threads import run_in_threads

__all__ = ["run_in_threads"]
