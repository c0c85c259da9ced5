"""TTG's invoke tasks: thin wrappers that parse flags and call ``ttg_ops``.

Run ``inv --list`` for the tasks and ``inv --help <task>`` for their flags.
Every task turns TTG's domain errors into a one-line message on stderr and a
non-zero exit code; a traceback means a bug in TTG, not a user mistake.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn TTG errors and Ctrl-C into a clear message and an exit code."""
    from ttg_ops.errors import TTGError

    try:
        yield
    except TTGError as exc:
        raise Exit(f"error: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise Exit(code=130) from None


# ---------------------------------------------------------------------------
# Root tasks
# ---------------------------------------------------------------------------


ns = Collection()
