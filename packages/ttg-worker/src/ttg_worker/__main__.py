"""``ttg-worker`` / ``python -m ttg_worker``: read the settings, configure logging, run."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker; return its exit code (0, 1, 2, or 128+signal)."""
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
