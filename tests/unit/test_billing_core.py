"""The pure money and metering arithmetic."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.core import billing as core
from dockyard.core.billing import US, US_PER_HOUR, PriceRow
from dockyard.core.errors import InvalidInput


@pytest.mark.parametrize("text,minor", [("12.50", 125000), ("0", 0), ("3", 30000), ("0.0001", 1), (" 7.5 ", 75000),
                                        (2, 20000), (1.25, 12500)])
def test_parse_amount(text, minor):
    assert core.parse_amount(text) == minor


@pytest.mark.parametrize("text,words", [("-1", "negative"), ("abc", "not an amount"), ("", "not an amount"),
                                        ("1.00001", "4 decimals"), ("nan", "not an amount"), ("inf", "not an amount"),
                                        ("1e20", "too large"), (None, "not an amount"), (True, "not an amount")])
def test_parse_amount_refusals_name_the_field(text, words):
    with pytest.raises(InvalidInput) as refused:
        core.parse_amount(text, field="amount")
    assert words in refused.value.message and refused.value.message.startswith("amount:")
    assert refused.value.field == "amount"


def test_zero_refused_where_an_amount_must_move():
    with pytest.raises(InvalidInput, match="more than zero"):
        core.parse_amount("0", allow_zero=False)


def test_format_amount():
    assert core.format_amount(125000) == "12.50"
    assert core.format_amount(1) == "0.00"
    assert core.format_amount(50) == "0.01"
    assert core.format_amount(-125049) == "-12.50"
    assert core.format_amount(1, 4) == "0.0001"


def test_node_price_overrides_and_no_price_is_free():
    rows = [PriceRow("gpu", "A100", "", 0, 100, 1), PriceRow("gpu", "A100", "n2", 50, 70, 2),
            PriceRow("gpu", "A100", "", 80, 120, 3)]
    assert core.price_steps(rows, "gpu", "A100", "n1") == ((0, 100), (80, 120))
    assert core.price_steps(rows, "gpu", "A100", "n2") == ((0, 100), (50, 70))
    assert core.price_steps(rows, "gpu", "H100", "n1") == ()
    assert core.rate_at((), 10**15) == 0


def test_windows_are_aligned_and_the_last_is_partial():
    steps = ((0, 3600 * 10_000),)  # 1 currency unit per second
    start = 1_000 * 60 * US + 30 * US  # 30 s into a minute
    found = core.windows(steps, 1, start, start, start + 100 * US, closed=True)
    assert [(w.start - start) // US for w in found] == [0, 30, 90]
    assert [w.amount for w in found] == [300_000, 600_000, 100_000]
    still_open = core.windows(steps, 1, start, start, start + 100 * US, closed=False)
    assert [w.amount for w in still_open] == [300_000, 600_000]


@st.composite
def scenario(draw):
    price_changes = draw(st.lists(st.tuples(st.integers(0, 4000 * US), st.integers(0, 10**7)), max_size=6))
    rows = [PriceRow("gpu", "A", "", t, p, i) for i, (t, p) in enumerate(price_changes)]
    start = draw(st.integers(0, 2000 * US))
    length = draw(st.integers(0, 3000 * US))
    cuts = sorted(draw(st.lists(st.integers(start, start + length + 200 * US), max_size=8)))
    count = draw(st.integers(1, 8))
    return rows, start, start + length, cuts, count


def exact_integral(steps, a, b) -> Fraction:
    total = Fraction(0)
    for t in range(len(steps)):
        lo = max(a, steps[t][0])
        hi = min(b, steps[t + 1][0]) if t + 1 < len(steps) else b
        if hi > lo:
            total += Fraction(steps[t][1] * (hi - lo), US_PER_HOUR)
    return total


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_settlement_in_any_cycles_charges_the_integral_exactly(case):
    """Whatever the settlement times (and crashes between them), a run's windows tile it
    exactly and sum to floor(integral of price over running time)."""
    rows, start, end, cuts, count = case
    steps = core.price_steps(rows, "gpu", "A")
    posted, until = {}, start
    for now in cuts:  # settlement cycles while the run is open (it has not ended yet at `now`)
        if now >= end:
            break
        for w in core.windows(steps, count, start, until, now, closed=False):
            assert w.key not in posted
            posted[w.key] = w
            until = w.end
    for w in core.windows(steps, count, start, until, end, closed=True):  # the stop
        assert w.key not in posted
        posted[w.key] = w
    uninterrupted = {w.key: w for w in core.windows(steps, count, start, start, end, closed=True)}
    assert {k: w.amount for k, w in posted.items()} == {k: w.amount for k, w in uninterrupted.items()}
    assert core.check_coverage(start, [(w.start, w.end) for w in posted.values()], end) is None
    total = sum(w.amount for w in posted.values())
    assert total == int(count * exact_integral(steps, start, end)) == core.segment_total(steps, count, start, end)
    assert all(w.amount >= 0 for w in posted.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), max_size=4))
def test_split_charge_pays_everything_once(amount, balances):
    vouchers = [(f"v{i}", b) for i, b in enumerate(balances)]
    legs = core.split_charge(amount, vouchers, "wallet")
    assert sum(a for _, a in legs) == amount
    assert legs[-1][0] == "wallet"
    for account, part in legs[:-1]:
        assert 0 < part <= dict(vouchers)[account]


def test_coverage_finds_gaps_and_overlaps():
    assert core.check_coverage(0, [(0, 5), (5, 9)], 9) is None
    assert "gap" in core.check_coverage(0, [(0, 5), (6, 9)], 9)
    assert "overlap" in core.check_coverage(0, [(0, 5), (4, 9)], 9)
    assert "covered up to" in core.check_coverage(0, [(0, 5)], 9)
