"""Money and metering arithmetic, pure and exact.

Amounts are integers in a minor unit of 1/10000 of the currency unit, so a per-second
charge never rounds to zero. Times are integer microseconds since the epoch. A price is
piecewise constant in time (a list of steps); the charge for a period is derived from
the integral of the price over the running time, with integer arithmetic only.

The telescoping rule: within one usage segment (one run of an instance), the amount of a
window [a, b) is floor(C(b)) - floor(C(a)), where C(t) is the exact integral of the price
from the segment's start to t. However a segment is cut into windows, and whichever
windows were settled before a crash, the sum over its windows is floor(C(end)): the total
charged equals the integral of the price over the running time, to the minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Iterable, Sequence

from dockyard.core.errors import DockyardError, InvalidInput

MINOR_PER_UNIT = 10_000
US = 1_000_000
US_PER_HOUR = 3600 * US
US_PER_DAY = 86_400 * US
WINDOW_S = 60
MAX_AMOUNT = 10**12  # one hundred million currency units, in minor units


class PaymentRequired(DockyardError):
    """The balance cannot pay for what was asked."""

    status_code = 402


# ---- money -----------------------------------------------------------------------------


def parse_amount(value: object, field: str = "amount", allow_zero: bool = True) -> int:
    """'12.50' -> 125000 minor units. Refuses negative, non-numeric, too precise or huge."""
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{field}: {value!r} is not an amount; use a number like 12.50", field=field)
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"{field}: {text!r} is not an amount; use a number like 12.50", field=field) from None
    if not number.is_finite():
        raise InvalidInput(f"{field}: {text!r} is not an amount; use a number like 12.50", field=field)
    if number < 0:
        raise InvalidInput(f"{field}: {text} is negative; amounts are zero or more", field=field)
    if number == 0 and not allow_zero:
        raise InvalidInput(f"{field}: the amount must be more than zero", field=field)
    minor = number * MINOR_PER_UNIT
    if minor != minor.to_integral_value():
        raise InvalidInput(f"{field}: {text} has more than 4 decimals", field=field)
    if minor > MAX_AMOUNT:
        raise InvalidInput(f"{field}: {text} is too large", field=field)
    return int(minor)


def format_amount(minor: int, decimals: int = 2) -> str:
    """125000 -> '12.50' (rounded half up, for display only; the ledger keeps minor units)."""
    value = Decimal(minor) / MINOR_PER_UNIT
    return str(value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---- prices ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceRow:
    """One entry of the price book: `price` minor units per hour (GPU, no-GPU) or per GB
    per day (disk, image), for `model` ('' for none) on `node` ('' for every node), from
    `effective_from` (microseconds) on."""

    kind: str
    model: str
    node: str
    effective_from: int
    price: int
    id: int = 0


Steps = tuple[tuple[int, int], ...]  # ((from_us, rate), ...) sorted; rate 0 before the first


def _latest(rows: Sequence[PriceRow], t: int) -> PriceRow | None:
    best = None
    for row in rows:
        if row.effective_from <= t and (best is None or (row.effective_from, row.id) > (best.effective_from, best.id)):
            best = row
    return best


def price_steps(rows: Iterable[PriceRow], kind: str, model: str = "", node: str = "") -> Steps:
    """The price over time for one (kind, model, node): a node's own price wins over the
    price for every node once it exists; no price at all means free."""
    generic = [r for r in rows if r.kind == kind and r.model == model and r.node == ""]
    own = [r for r in rows if r.kind == kind and r.model == model and node and r.node == node] if node else []
    times = sorted({r.effective_from for r in (*generic, *own)})
    steps: list[tuple[int, int]] = []
    for t in times:
        row = _latest(own, t) or _latest(generic, t)
        rate = row.price if row else 0
        if not steps or steps[-1][1] != rate:
            steps.append((t, rate))
    return tuple(steps)


def rate_at(steps: Steps, t: int) -> int:
    rate = 0
    for start, value in steps:
        if start > t:
            break
        rate = value
    return rate


def integral(steps: Steps, a: int, b: int) -> int:
    """Exact integral of the rate over [a, b), in rate-units x microseconds."""
    if b <= a:
        return 0
    total = 0
    bounds = list(steps) + [(None, None)]
    # Before the first step the rate is 0.
    for (start, rate), (following, _) in zip(bounds, bounds[1:]):
        lo = max(a, start)
        hi = b if following is None else min(b, following)
        if hi > lo:
            total += rate * (hi - lo)
    return total


def cum_floor(steps: Steps, multiplier: int, unit_us: int, origin: int, t: int) -> int:
    """floor(C(t)): the charge from `origin` to `t`, in minor units, rounded down."""
    return (multiplier * integral(steps, origin, t)) // unit_us


@dataclass(frozen=True)
class Window:
    key: int  # the aligned window's start, in whole seconds since the epoch
    start: int  # the covered period, in microseconds
    end: int
    amount: int


def windows(steps: Steps, multiplier: int, origin: int, settled_until: int, limit: int, closed: bool,
            unit_us: int = US_PER_HOUR, window_s: int = WINDOW_S) -> list[Window]:
    """The windows to post for a segment that started at `origin`, settled up to
    `settled_until`, now known up to `limit` (its end when `closed`).

    Windows are aligned on `window_s` seconds since the epoch. An open segment posts only
    windows that ended by `limit`; a closed one also its last, partial window.
    """
    out: list[Window] = []
    width = window_s * US
    start = settled_until
    while start < limit:
        key = start // width * width
        end = key + width
        if end > limit:
            if not closed:
                break
            end = limit
        amount = cum_floor(steps, multiplier, unit_us, origin, end) - cum_floor(steps, multiplier, unit_us, origin, start)
        out.append(Window(key // US, start, end, amount))
        start = end
    return out


def segment_total(steps: Steps, multiplier: int, origin: int, end: int, unit_us: int = US_PER_HOUR) -> int:
    """What a closed segment costs in all: floor of the integral over its running time."""
    return cum_floor(steps, multiplier, unit_us, origin, end)


def split_charge(amount: int, vouchers: Sequence[tuple[str, int]], wallet: str) -> list[tuple[str, int]]:
    """Vouchers (in the order given) pay first, up to their balance; the wallet pays the rest
    (it may go below zero). Returns (account, amount) legs; the wallet leg is always there."""
    legs = []
    left = amount
    for account, balance in vouchers:
        if left <= 0:
            break
        take = min(balance, left)
        if take > 0:
            legs.append((account, take))
            left -= take
    legs.append((wallet, left))
    return legs


def check_coverage(origin: int, periods: Sequence[tuple[int, int]], until: int) -> str | None:
    """None if `periods` tile [origin, until) exactly once, else what is wrong."""
    at = origin
    for start, end in sorted(periods):
        if start < at:
            return f"overlap at {start}"
        if start > at:
            return f"gap from {at} to {start}"
        if end <= start:
            return f"empty period at {start}"
        at = end
    if at != until:
        return f"covered up to {at}, settled up to {until}"
    return None
