"""Rules for user-supplied names and environment variable names."""

import pytest

from dockyard.core.validation import is_valid_env_name, is_valid_name


@pytest.mark.parametrize("name", ["a", "alice", "Bob-2", "my_box", "0day", "x" * 63, "A-b_C-9"])
def test_valid_names(name):
    assert is_valid_name(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a;rm -rf",
        "a;b",
        "a/b",
        "..",
        "a..b",
        "../etc",
        "$HOME",
        "a$b",
        "a b",
        " a",
        "`id`",
        "a`b",
        "-rf",
        "_lead",
        "a.b",
        "a|b",
        "a&b",
        "a\nb",
        "abc\n",  # a trailing newline must not slip past `$`
        "x" * 64,
        "é",
    ],
)
def test_invalid_names(name):
    assert is_valid_name(name) is False


@pytest.mark.parametrize("name", ["PATH", "_x", "CUDA_VISIBLE_DEVICES", "a1", "A" * 128])
def test_valid_env_names(name):
    assert is_valid_env_name(name) is True


@pytest.mark.parametrize(
    "name",
    ["", "1ABC", "A-B", "A B", "A=B", "A;B", "$A", "A/B", "`A`", "-A", "A.B", "PATH\n", "A\nB", "A" * 129],
)
def test_invalid_env_names(name):
    assert is_valid_env_name(name) is False
