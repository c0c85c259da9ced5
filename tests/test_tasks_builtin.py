"""Built-in tasks compute checkable values; TTG_TASK resolution fails clearly."""

from __future__ import annotations

import math
import time

import pytest
from ttg_worker.errors import WorkerConfigError
from ttg_worker.tasks import (
    _PACING,
    BUILTIN_TASKS,
    check_options,
    collatz,
    describe_tasks,
    flaky,
    is_prime,
    monte_carlo_pi,
    noop,
    resolve_task,
    simulate,
)


def test_collatz_counts_the_known_steps() -> None:
    # n = index + 1 by default: 1 -> 0 steps, 27 -> 111 steps, 97 -> 118 steps.
    assert collatz(0) == 0
    assert collatz(26) == 111
    assert collatz(96) == 118
    assert collatz({"n": 27}) == 111
    assert collatz(27, start=0) == 111
    with pytest.raises(ValueError, match="n >= 1"):
        collatz(0, start=0)


def test_is_prime_agrees_with_a_sieve() -> None:
    limit = 5_000
    sieve = [True] * limit
    sieve[0] = sieve[1] = False
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = [False] * len(range(p * p, limit, p))
    assert [is_prime(n) for n in range(limit)] == sieve
    assert is_prime(2**61 - 1)
    assert not is_prime(3_215_031_751)  # a strong pseudoprime to bases 2, 3, 5, 7
    assert is_prime({"n": 97})


def test_monte_carlo_pi_is_deterministic_per_parameter_and_close_to_pi() -> None:
    first = monte_carlo_pi(5, samples=20_000, seed=1)
    assert first == monte_carlo_pi(5, samples=20_000, seed=1)
    assert first != monte_carlo_pi(6, samples=20_000, seed=1)
    assert abs(first - math.pi) < 0.05
    assert monte_carlo_pi({"n": 5, "samples": 20_000, "seed": 1}) == first
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_pi(1, samples=0)


def test_simulate_takes_its_cost_on_average_and_returns_a_stable_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(_PACING, "debt", 0.0)
    start = time.perf_counter()
    for index in range(100):
        simulate(index, cost_ms=2.0)
    per_call = (time.perf_counter() - start) / 100
    # The lower bound is exact but for the 50 ms of catch-up a late call may earn.
    assert 0.0015 < per_call < 0.01  # generous above: the CI machine is shared
    assert simulate(3, cost_ms=0) == simulate(3, cost_ms=0) == (3 * 2654435761) % 2**32
    assert simulate({"x": 1}, cost_ms=0) == 0


def test_simulate_makes_up_for_its_own_overruns_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever the machine's load: total time = calls * cost - debt before + debt after.
    monkeypatch.setitem(_PACING, "debt", 0.02)
    start = time.perf_counter()
    for index in range(30):
        simulate(index, cost_ms=2.0)
    total = time.perf_counter() - start
    assert total == pytest.approx(0.06 - 0.02 + _PACING["debt"], abs=0.003)

    simulate(1, cost_ms=2.0)
    time.sleep(0.05)  # time outside simulate is not debt: the next call is not shortened by it
    debt = _PACING["debt"]
    start = time.perf_counter()
    simulate(2, cost_ms=2.0)
    assert time.perf_counter() - start >= 0.002 - debt


def test_flaky_raises_on_multiples() -> None:
    assert flaky(3) == 9
    with pytest.raises(ValueError, match="multiple of 10"):
        flaky(20)
    assert noop(5) is None


def test_tasks_reject_parameters_of_the_wrong_shape() -> None:
    with pytest.raises(KeyError, match="no 'n' key"):
        collatz({"m": 1})
    with pytest.raises(TypeError, match="must be an integer"):
        is_prime("7")


def test_every_builtin_is_listed_with_a_description() -> None:
    listed = dict(describe_tasks())
    assert set(listed) == set(BUILTIN_TASKS) >= {"simulate", "noop", "collatz", "is_prime"}
    assert all(listed.values())


def test_module_function_tasks_resolve() -> None:
    assert resolve_task("math:sqrt") is math.sqrt
    assert resolve_task("ttg_worker.tasks:collatz") is collatz
    assert resolve_task(" noop ") is noop


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "is not a built-in task (simulate, noop"),
        (
            "no_such_module_xyz:run",
            "cannot import module 'no_such_module_xyz' (ModuleNotFoundError",
        ),
        ("math:no_such_function", "module 'math' has no attribute 'no_such_function'"),
        ("math:pi", "'pi' is not callable"),
        (":run", "write it as 'module:function'"),
    ],
)
def test_bad_tasks_are_configuration_errors_naming_the_problem(spec: str, message: str) -> None:
    with pytest.raises(WorkerConfigError, match="TTG_TASK=") as info:
        resolve_task(spec)
    assert message in str(info.value)


def test_task_options_are_checked_against_the_signature() -> None:
    check_options(simulate, "simulate", {"cost_ms": 1})
    with pytest.raises(WorkerConfigError, match="accepted options: cost_ms"):
        check_options(simulate, "simulate", {"cost": 1})
    with pytest.raises(WorkerConfigError, match="accepted options: none"):
        check_options(noop, "noop", {"x": 1})
