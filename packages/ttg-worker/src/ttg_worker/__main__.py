"""``ttg-worker`` / ``python -m ttg_worker``: read the settings, configure logging, run."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# The conventional exit code of a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; return its exit code (0, 1, 2, or 128+signal).

    When whoever reads stdout goes away (``ttg-worker | head -1``) the worker
    stops quietly with 141, as a process killed by SIGPIPE would; the results
    written so far stay in the shard and a restart resumes.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    from ttg_worker.config import load_config, parse_args

    args = parse_args(argv)  # --help and --version end here, before loguru is imported
    if args.list_tasks:
        from ttg_worker.tasks import describe_tasks

        for name, text in describe_tasks():
            print(f"{name:<16} {text}")
        return 0

    from ttg_logging import LoggingConfigError, configure

    from ttg_worker.errors import WorkerConfigError

    try:
        config = load_config(args)
        configure(config.worker_id, config.log_level, config.log_format)
        from ttg_worker.runner import run

        return run(config)
    except (WorkerConfigError, LoggingConfigError) as exc:
        print(f"ttg-worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
