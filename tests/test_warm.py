"""A party that ends while its head-start import still runs (splitfed/runtime/warm.py).

A `splitfed client` refused at once by its server exits while the thread importing
``torch._dynamo`` ahead of time still runs. Python kills a daemon thread at exit, mid-import;
inside torch's C++ code that aborts the process (``FATAL: exception not rethrown``, SIGABRT)
instead of letting it exit with its own status. The exit must wait for the import instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from splitfed.runtime import warm
    warm.MODULES = ("slow_import",)
    warm.warm_imports()
    sys.exit(3)  # an error before the import is done
    """
)


def test_a_process_that_exits_during_the_head_start_import_lets_it_finish(tmp_path: Path) -> None:
    done_file = tmp_path / "imported"
    (tmp_path / "slow_import.py").write_text(f"import time\ntime.sleep(1.0)\nopen({str(done_file)!r}, 'w').close()\n")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr  # its own status, not SIGABRT
    assert done_file.exists()  # the import ran to its end: it was not killed half way
