"""Parsing `--volume NAME[:/path]` and the auto-release schedule: pure logic."""

from datetime import timedelta

import pytest

from dockyard.core.errors import InvalidInput
from dockyard.services.autorelease import due
from dockyard.services.volumes import DATA_MOUNT, Mount, parse_mount

DAY = timedelta(days=1)


@pytest.mark.parametrize("text, expected", [
    ("data", Mount("data", None)),
    ("data:/root/data", Mount("data", DATA_MOUNT)),
    ("data:/mnt/work", Mount("data", "/mnt/work")),
    ("data:/root/datasets", Mount("data", "/root/datasets")),
    ("data:/mnt/work/", Mount("data", "/mnt/work")),
])
def test_good_mounts(text, expected):
    assert parse_mount(text) == expected


@pytest.mark.parametrize("text", [":/mnt", "data:", "data:relative", "data:/mnt/../etc", "data:/etc",
                                  "data:/usr/local", "data:/", "data:/root", "data:/proc/x", "data:/mnt//x"])
def test_bad_mounts(text):
    with pytest.raises(InvalidInput):
        parse_mount(text)


def test_the_schedule_sends_the_most_urgent_notice_once():
    assert due(15, 11.9 * DAY, DAY, 0) is None
    assert due(15, 12 * DAY, DAY, 0) == ("notice", 1)
    assert due(15, 12 * DAY, DAY, 1) is None
    assert due(15, 14 * DAY, DAY, 1) == ("notice", 2)
    assert due(15, 14 * DAY, DAY, 0) == ("notice", 2)  # missed the first: only the closer one
    assert due(15, 15 * DAY, DAY, 2) == ("release", 0)
    assert due(2, 0 * DAY, DAY, 0) == ("notice", 1)  # fewer than 3 days: warned at once
    assert due(2, 1 * DAY, DAY, 1) == ("notice", 2)
