"""Built-in tasks and the resolution of ``TTG_TASK``.

A task is a function ``task(param, **options)``: ``param`` is the global
index (an int) for the range space and a dict for grid, JSONL and CSV
spaces; ``options`` are the keys of ``TTG_TASK_OPTIONS``. It returns a
JSON-serialisable value; an exception marks that parameter as failed.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any

from ttg_worker.errors import WorkerConfigError

Task = Callable[..., Any]


def _number(param: Any, key: str) -> int:
    """The integer a task works on: the int parameter, or ``param[key]`` for dicts."""
    if isinstance(param, dict):
        if key not in param:
            raise KeyError(f"parameter has no {key!r} key (keys: {sorted(param)})")
        param = param[key]
    if isinstance(param, bool) or not isinstance(param, int):
        raise TypeError(f"{key} must be an integer, got {param!r}")
    return param


# Pacing state of simulate(): the moving average of how much longer than asked
# time.sleep() takes here, and the time earlier calls ran over their cost.
_PACING = {"overshoot": 0.0, "debt": 0.0}
_MAX_DEBT = 0.05


def simulate(param: Any, cost_ms: float = 2.0) -> int:
    """Stand in for real work: take ``cost_ms`` milliseconds, return a hash of the index.

    The time is spent in a precise sleep, not in CPU work, so the seed's rate
    of ~499 parameters per second per worker holds however many workers share
    the CPU: ``time.sleep`` for the cost minus the oversleep measured on
    earlier calls, then a short spin on ``perf_counter`` up to the deadline.
    A call that still ran over (the process waited for a CPU) makes the next
    calls shorter by as much, up to 50 ms in all, so the average cost is
    exact; time spent outside ``simulate`` is never made up for.
    The value is a deterministic 32-bit hash of an int parameter, 0 for dicts.
    """
    cost = cost_ms / 1000.0
    start = time.perf_counter()
    target = max(cost - _PACING["debt"], 0.0)
    deadline = start + target
    request = target - _PACING["overshoot"]
    if request > 0:
        time.sleep(request)
        over = min(max(time.perf_counter() - start - request, 0.0), cost)
        _PACING["overshoot"] += 0.1 * (over - _PACING["overshoot"])
    while time.perf_counter() < deadline:
        pass
    spent = time.perf_counter() - start
    _PACING["debt"] = min(max(_PACING["debt"] + spent - cost, 0.0), _MAX_DEBT)
    if isinstance(param, int):
        return (param * 2654435761) % 2**32
    return 0


def noop(param: Any) -> None:
    """Do nothing: measures the framework's own cost per parameter."""
    return None


def collatz(param: Any, start: int = 1) -> int:
    """Steps for ``n`` to reach 1 under the Collatz map; ``n = param + start`` (or ``param["n"]``).

    With the default ``start=1``, index 0 is ``n=1`` (0 steps), index 26 is
    ``n=27`` (111 steps).
    """
    n = _number(param, "n")
    if not isinstance(param, dict):
        n += start
    if n < 1:
        raise ValueError(f"collatz needs n >= 1, got {n}")
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def is_prime(param: Any) -> bool:
    """Whether ``n`` (the int parameter or ``param["n"]``) is prime; deterministic Miller-Rabin."""
    n = _number(param, "n")
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    # These bases decide primality exactly for every n < 3.3e24.
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def monte_carlo_pi(param: Any, samples: int = 10_000, seed: int = 0) -> float:
    """Estimate pi from ``samples`` random points; the stream is seeded by ``seed`` and the index.

    The same parameter and seed give the same estimate on every run and host.
    Dict parameters may carry ``samples`` and ``seed`` keys themselves.
    """
    if isinstance(param, dict):
        samples = int(param.get("samples", samples))
        seed = int(param.get("seed", seed))
        index = int(param.get("n", 0))
    else:
        index = _number(param, "n")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    import random

    rng = random.Random(seed * 1_000_003 + index)
    inside = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        if x * x + y * y <= 1.0:
            inside += 1
    return 4.0 * inside / samples


def flaky(param: Any, every: int = 10) -> int:
    """Return ``n`` squared, but raise ValueError when ``n`` is a multiple of ``every``.

    For trying out failure handling, the failure threshold and reruns.
    """
    n = _number(param, "n")
    if every > 0 and n % every == 0:
        raise ValueError(f"parameter {n} is a multiple of {every}")
    return n * n


BUILTIN_TASKS: dict[str, Task] = {
    "simulate": simulate,
    "noop": noop,
    "collatz": collatz,
    "is_prime": is_prime,
    "monte_carlo_pi": monte_carlo_pi,
    "flaky": flaky,
}


def describe_tasks() -> list[tuple[str, str]]:
    """``(name, first docstring line)`` of every built-in task."""
    return [
        (name, (inspect.getdoc(func) or "").splitlines()[0].replace("``", ""))
        for name, func in BUILTIN_TASKS.items()
    ]


def resolve_task(spec: str) -> Task:
    """The function for ``TTG_TASK``: a built-in name or ``module:function``."""
    name = spec.strip()
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if ":" not in name:
        raise WorkerConfigError(
            f"TTG_TASK={spec!r} is not a built-in task ({', '.join(BUILTIN_TASKS)}) "
            "nor 'module:function'"
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise WorkerConfigError(f"TTG_TASK={spec!r}: write it as 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is a configuration problem
        raise WorkerConfigError(
            f"TTG_TASK={spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from None
    func = module
    for part in attr.split("."):
        try:
            func = getattr(func, part)
        except AttributeError:
            raise WorkerConfigError(
                f"TTG_TASK={spec!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(func):
        raise WorkerConfigError(f"TTG_TASK={spec!r}: {attr!r} is not callable")
    return func


def check_options(task: Task, name: str, options: dict[str, Any]) -> None:
    """Fail early, naming the option, if ``task`` cannot take ``options`` as keywords."""
    try:
        signature = inspect.signature(task)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(0, **options)
    except TypeError as exc:
        accepted = [
            p.name
            for p in list(signature.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise WorkerConfigError(
            f"TTG_TASK_OPTIONS={options!r} do not fit task {name!r} ({exc}); "
            f"accepted options: {', '.join(accepted) or 'none'}"
        ) from None
