"""User action settings as stored JSON, and the canonical JSON a definition is stored as.
Pure: no Redis, no server."""

from __future__ import annotations

from app.engine.catalog import action_from_json, action_to_json, canonical_json
from app.engine.retry import ActionSettings, RetryPolicy


def test_canonical_json_is_compact_with_sorted_keys_at_every_level() -> None:
    value = {"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": "é"}}

    assert canonical_json(value) == '{"a":{"c":"é","d":[3,{"y":2,"z":1}]},"b":1}'
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


def test_action_settings_are_stored_under_their_json_names() -> None:
    action = ActionSettings("charge", 4, 1.5, RetryPolicy.LINEAR, 30.0, 12.0)

    assert action_to_json(action) == {
        "name": "charge",
        "retryCount": 4,
        "retryAfterSeconds": 1.5,
        "retryPolicy": "LINEAR",
        "timeoutSeconds": 30.0,
        "pollTimeoutSeconds": 12.0,
    }


def test_no_poll_timeout_is_stored_as_null() -> None:
    action = ActionSettings("charge", 4, 1.5, RetryPolicy.FIXED, 30.0)

    assert action_to_json(action)["pollTimeoutSeconds"] is None


def test_stored_settings_read_back_equal() -> None:
    for poll_timeout in (None, 0.25):
        action = ActionSettings("charge", 4, 1.5, RetryPolicy.EXPONENTIAL, 30.0, poll_timeout)

        assert action_from_json(action_to_json(action)) == action


def test_stored_numbers_are_read_with_their_types() -> None:
    action = action_from_json(
        {
            "name": "charge",
            "retryCount": 2,
            "retryAfterSeconds": 3,
            "retryPolicy": "FIXED",
            "timeoutSeconds": 4,
            "pollTimeoutSeconds": 5,
        }
    )

    assert action == ActionSettings("charge", 2, 3.0, RetryPolicy.FIXED, 4.0, 5.0)
    assert action.retry_policy is RetryPolicy.FIXED
    assert [type(value) for value in (action.retry_after_seconds, action.timeout_seconds)] == [
        float,
        float,
    ]
    assert type(action.poll_timeout_seconds) is float


def test_settings_stored_before_poll_timeouts_existed_have_none() -> None:
    action = action_from_json(
        {
            "name": "charge",
            "retryCount": 2,
            "retryAfterSeconds": 3.0,
            "retryPolicy": "FIXED",
            "timeoutSeconds": 4.0,
        }
    )

    assert action.poll_timeout_seconds is None
