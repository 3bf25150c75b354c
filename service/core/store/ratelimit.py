"""Per-provider-account rate limit (DESIGN §5): GCRA over one Redis key per account.

GCRA (the generic cell rate algorithm) keeps a single number per account, the theoretical
arrival time (TAT) of the next request, so a check is one atomic script call and the state
cannot grow. A request of ``cost`` calls at ``now`` is allowed when ``now >= TAT - burst_tolerance``
(one call's room); it then pushes TAT one emission interval (``1 / rate``) further per call, so
the calls it overdraws are paid for by the waits that follow. Over any window of ``w`` seconds at
most ``burst + rate * w + cost - 1`` calls pass, whichever worker asks. (Waiting until all of a
request's calls fit would starve a request of several calls behind single ones.)
"""

from __future__ import annotations

from collections.abc import Callable

from service.core.store import keys
from service.core.store.base import Store

# Returns "0" when allowed, else the seconds to wait (as a string: Lua numbers become integers).
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval * cost
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


def take(store: Store, account: str, rate_per_s: float, burst: int, now: float, cost: int = 1) -> float:
    """Take ``cost`` tokens of ``account``'s budget: 0.0 when granted, else seconds until one frees.

    ``now`` comes from the caller's clock (workers share time through NTP; tests pass a manual
    clock). A rate of 0 or less means unlimited.
    """
    if rate_per_s <= 0:
        return 0.0
    interval = 1.0 / rate_per_s
    tolerance = interval * (max(burst, 1) - 1)
    wait = store.r.eval(
        _GCRA,
        1,
        keys.provider_rate(account),
        repr(now),
        repr(interval),
        repr(tolerance),
        str(cost),
    )
    return float(wait)  # type: ignore[arg-type]


def wait_for(
    store: Store,
    account: str,
    rate_per_s: float,
    burst: int,
    now: Callable[[], float],
    sleep: Callable[[float], None],
    longest_s: float = 5.0,
) -> None:
    """Block until ``account``'s budget grants one call (work that must go on, not be rescheduled:
    an import, a distillation), sleeping at most ``longest_s`` between tries."""
    while (wait := take(store, account, rate_per_s, burst, now())) > 0:
        sleep(min(wait, longest_s))
