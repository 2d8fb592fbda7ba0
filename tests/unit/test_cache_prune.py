"""The pure parts of cache pruning: which entries are stale, durations, created times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lamina.cache.prune import is_cache_key, parse_created, parse_duration_text, select_stale

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


ENTRIES = [("a", _days_ago(30)), ("b", _days_ago(20)), ("c", _days_ago(10)), ("d", _days_ago(1)),
           ("e", _days_ago(0))]


@pytest.mark.parametrize(("older_than", "keep", "expected"), [
    (timedelta(days=14), 0, ["a", "b"]),
    (timedelta(days=5), 0, ["a", "b", "c"]),
    (timedelta(days=5), 3, ["a", "b"]),  # c is among the 3 newest
    (timedelta(days=5), 5, []),
    (timedelta(days=5), 50, []),
    (timedelta(days=100), 0, []),
    (timedelta(0), 0, ["a", "b", "c", "d"]),  # e is exactly now: not older than the cutoff
    (timedelta(0), 1, ["a", "b", "c", "d"]),
    (timedelta(0), 2, ["a", "b", "c"]),
    (timedelta(days=10), 0, ["a", "b"]),  # exactly at the cutoff: kept
], ids=lambda value: str(value))
def test_select_stale(older_than: timedelta, keep: int, expected: list[str]) -> None:
    assert select_stale(ENTRIES, older_than=older_than, keep=keep, now=NOW) == expected
    assert select_stale(list(reversed(ENTRIES)), older_than=older_than, keep=keep, now=NOW) == expected


def test_select_stale_edge_cases() -> None:
    assert select_stale([], older_than=timedelta(days=1), keep=0, now=NOW) == []
    same_time = [("y", _days_ago(9)), ("x", _days_ago(9)), ("z", _days_ago(9))]
    assert select_stale(same_time, older_than=timedelta(days=1), keep=1, now=NOW) == ["x", "y"]
    other_zone = timezone(timedelta(hours=5))
    assert select_stale([("t", datetime(2024, 5, 31, 16, 59, tzinfo=other_zone))], older_than=timedelta(hours=1),
                        keep=0, now=NOW) == ["t"]  # 11:59 UTC
    with pytest.raises(ValueError, match="keep"):
        select_stale(ENTRIES, older_than=timedelta(days=1), keep=-1, now=NOW)
    with pytest.raises(ValueError, match="older_than"):
        select_stale(ENTRIES, older_than=timedelta(days=-1), keep=0, now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        select_stale(ENTRIES, older_than=timedelta(days=1), keep=0, now=datetime(2024, 6, 1))


@pytest.mark.parametrize(("text", "expected"), [
    ("336h", timedelta(hours=336)),
    ("14d", timedelta(days=14)),
    ("2w", timedelta(weeks=2)),
    ("90m", timedelta(minutes=90)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1.5h", timedelta(hours=1, minutes=30)),
    ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
    ("500ms", timedelta(milliseconds=500)),
    ("0", timedelta(0)),
    ("0s", timedelta(0)),
    (" 24h ", timedelta(hours=24)),
])
def test_parse_duration_text(text: str, expected: timedelta) -> None:
    assert parse_duration_text(text) == expected


@pytest.mark.parametrize("text", ["", "h", "14", "-1h", "1y", "1 h", "1h 30m", "1H", "h1", "1h30", "1..5h", "1hm"])
def test_parse_duration_text_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration_text(text)
    assert "336h" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ("2024-05-01T12:00:00", None),  # no offset: not RFC 3339
    ("2024-05-01", None),
    ("yesterday", None),
    ("", None),
    (12345, None),
    (None, None),
])
def test_parse_created(value: object, expected: datetime | None) -> None:
    assert parse_created(value) == expected


def test_is_cache_key() -> None:
    assert is_cache_key("0" * 64)
    assert is_cache_key("0123456789abcdef" * 4)
    assert not is_cache_key("A" * 64)
    assert not is_cache_key("0" * 63)
    assert not is_cache_key("latest")
    assert not is_cache_key("sha256-" + "0" * 64)
