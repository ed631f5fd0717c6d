"""The worker's action registry: decorator settings, the definitions they post, which
functions get the task, and how outputs become objects. Pure: no Redis, no server."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from orchy.worker.registry import (
    RESULT_KEY,
    ActionOptions,
    ActionRegistry,
    RegisteredAction,
    RetryPolicy,
    normalize_output,
)

NONE_GIVEN: dict[str, Any] = {
    "retry_count": None,
    "retry_after_seconds": None,
    "retry_policy": None,
    "timeout_seconds": None,
}


def build(**given: Any) -> ActionOptions:
    return ActionOptions.build("charge", **{**NONE_GIVEN, **given})


def refusal(**given: Any) -> str:
    with pytest.raises(ValueError) as caught:
        build(**given)
    return str(caught.value)


def one_argument(input: Any) -> Any:
    return input


def two_arguments(input: Any, task: Any) -> Any:
    return input


# -- options -------------------------------------------------------------------------------


def test_nothing_given_leaves_every_setting_to_the_server() -> None:
    options = build()

    assert options == ActionOptions()
    assert not options.given
    assert options.definition("charge") == {"name": "charge"}


def test_every_setting_given_is_in_the_definition_under_its_json_name() -> None:
    options = build(
        retry_count=0,
        retry_after_seconds=0,
        retry_policy="linear",
        timeout_seconds=0.5,
        poll_timeout_seconds=2.5,
    )

    assert options == ActionOptions(0, 0, RetryPolicy.LINEAR, 0.5, 2.5)
    assert options.retry_policy is RetryPolicy.LINEAR
    assert options.given
    assert options.definition("charge") == {
        "name": "charge",
        "retryCount": 0,
        "retryAfterSeconds": 0,
        "retryPolicy": "LINEAR",
        "timeoutSeconds": 0.5,
        "pollTimeoutSeconds": 2.5,
    }


@pytest.mark.parametrize(
    ("given", "definition"),
    [
        ({"retry_count": 0}, {"retryCount": 0}),
        ({"retry_after_seconds": 1.5}, {"retryAfterSeconds": 1.5}),
        ({"retry_policy": RetryPolicy.FIXED}, {"retryPolicy": "FIXED"}),
        ({"timeout_seconds": 3}, {"timeoutSeconds": 3}),
        ({"poll_timeout_seconds": 4}, {"pollTimeoutSeconds": 4}),
    ],
)
def test_any_one_setting_given_is_the_only_one_posted(
    given: dict[str, Any], definition: dict[str, Any]
) -> None:
    options = build(**given)

    assert options.given
    assert options.definition("charge") == {"name": "charge", **definition}


@pytest.mark.parametrize("policy", ["exponential", "Exponential", RetryPolicy.EXPONENTIAL])
def test_a_policy_is_read_in_any_case(policy: Any) -> None:
    assert build(retry_policy=policy).retry_policy is RetryPolicy.EXPONENTIAL


def test_an_unknown_policy_is_refused_listing_the_known_ones() -> None:
    assert refusal(retry_policy="random") == (
        "action 'charge': retry_policy must be one of FIXED, LINEAR, EXPONENTIAL, not 'random'"
    )


@pytest.mark.parametrize("count", [-1, True, 1.0, "2"])
def test_a_retry_count_must_be_an_int_of_zero_or_more(count: Any) -> None:
    assert refusal(retry_count=count) == (
        f"action 'charge': retry_count must be an int >= 0, not {count!r}"
    )


@pytest.mark.parametrize("after", [-0.5, float("inf"), float("nan"), True, "1"])
def test_retry_after_must_be_a_finite_number_of_zero_or_more(after: Any) -> None:
    assert refusal(retry_after_seconds=after) == (
        f"action 'charge': retry_after_seconds must be a number >= 0, not {after!r}"
    )


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), False, "5"])
def test_a_timeout_must_be_a_finite_number_above_zero(timeout: Any) -> None:
    assert refusal(timeout_seconds=timeout) == (
        f"action 'charge': timeout_seconds must be a number > 0, not {timeout!r}"
    )


@pytest.mark.parametrize("timeout", [0, -2.5, float("nan"), "3"])
def test_a_poll_timeout_must_be_a_finite_number_above_zero(timeout: Any) -> None:
    assert refusal(poll_timeout_seconds=timeout) == (
        f"action 'charge': poll_timeout_seconds must be a number > 0, not {timeout!r}"
    )


def test_the_smallest_values_allowed() -> None:
    options = build(
        retry_count=0, retry_after_seconds=0.0, timeout_seconds=1e-9, poll_timeout_seconds=1e-9
    )

    assert options == ActionOptions(0, 0.0, None, 1e-9, 1e-9)


# -- registry ------------------------------------------------------------------------------


def test_actions_are_kept_in_the_order_they_were_added() -> None:
    registry = ActionRegistry()

    first = registry.add("b-first", one_argument, ActionOptions())
    second = registry.add("a-second", two_arguments, build(retry_count=2))

    assert registry.names == ["b-first", "a-second"]
    assert list(registry) == [first, second]
    assert len(registry) == 2
    assert "a-second" in registry
    assert "c" not in registry
    assert registry.get("a-second") is second
    assert registry.get("c") is None
    assert second == RegisteredAction(
        "a-second", two_arguments, ActionOptions(retry_count=2), False, True
    )
    assert second.definition() == {"name": "a-second", "retryCount": 2}


def test_iterating_sees_the_actions_of_that_moment() -> None:
    registry = ActionRegistry()
    registry.add("a", one_argument, ActionOptions())

    seen = []
    for action in registry:
        seen.append(action.name)
        registry.add(action.name + "-again", one_argument, ActionOptions())

    assert seen == ["a"]
    assert registry.names == ["a", "a-again"]


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_an_action_needs_a_name(name: Any) -> None:
    with pytest.raises(ValueError) as caught:
        ActionRegistry().add(name, one_argument, ActionOptions())

    assert str(caught.value) == f"an action name must be a non-empty string, not {name!r}"


def test_an_action_must_be_callable() -> None:
    with pytest.raises(TypeError) as caught:
        ActionRegistry().add("a", 42, ActionOptions())  # type: ignore[arg-type]

    assert str(caught.value) == "action 'a': 42 is not callable"


def test_a_name_is_registered_once_naming_the_first_function() -> None:
    registry = ActionRegistry()
    registry.add("a", one_argument, ActionOptions())

    with pytest.raises(ValueError) as caught:
        registry.add("a", two_arguments, ActionOptions())

    assert str(caught.value) == "action 'a' is already registered (by 'one_argument')"
    assert registry.get("a").func is one_argument  # type: ignore[union-attr]


def test_a_function_without_a_qualified_name_is_named_by_its_repr() -> None:
    registry = ActionRegistry()
    partial = functools.partial(two_arguments, task=None)
    registry.add("a", partial, ActionOptions())

    with pytest.raises(ValueError) as caught:
        registry.add("a", one_argument, ActionOptions())

    assert str(caught.value) == f"action 'a' is already registered (by {partial!r})"


class SyncCallable:
    def __call__(self, input: Any) -> Any:
        return input


class AsyncCallable:
    async def __call__(self, input: Any, task: Any) -> Any:
        return input


async def async_function(input: Any) -> Any:
    return input


@pytest.mark.parametrize(
    ("func", "is_async"),
    [
        (one_argument, False),
        (async_function, True),
        (SyncCallable(), False),
        (AsyncCallable(), True),
        (len, False),
    ],
)
def test_async_functions_and_callables_are_told_apart(func: Any, is_async: bool) -> None:
    assert ActionRegistry().add("a", func, ActionOptions()).is_async is is_async


def keyword_only_task(input: Any, *, task: Any = None) -> Any:
    return input


def positional_only(input: Any, task: Any, /) -> Any:
    return input


def var_positional(*args: Any) -> Any:
    return args


def defaulted_task(input: Any, task: Any = None) -> Any:
    return input


def var_keyword(input: Any, **kwargs: Any) -> Any:
    return input


@pytest.mark.parametrize(
    ("func", "wants_task"),
    [
        (one_argument, False),
        (two_arguments, True),
        (positional_only, True),
        (defaulted_task, True),
        (var_positional, True),
        (keyword_only_task, False),
        (var_keyword, False),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (functools.partial(two_arguments, 1), False),
        (len, False),
        (dict.fromkeys, True),
        (min, False),  # a builtin without a signature
    ],
)
def test_a_function_taking_a_second_positional_argument_gets_the_task(
    func: Any, wants_task: bool
) -> None:
    assert ActionRegistry().add("a", func, ActionOptions()).wants_task is wants_task


# -- outputs -------------------------------------------------------------------------------


def test_an_object_output_is_kept_as_it_is() -> None:
    output = {"sent": True}

    assert normalize_output(output) is output


def test_no_output_is_an_empty_object() -> None:
    assert normalize_output(None) == {}


def test_any_other_output_is_put_under_result() -> None:
    assert RESULT_KEY == "result"
    assert normalize_output(42) == {"result": 42}
    assert normalize_output([1, "a"]) == {"result": [1, "a"]}
    assert normalize_output(False) == {"result": False}
