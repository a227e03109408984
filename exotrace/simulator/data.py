"""The simulated tenant's mail flow, generated from the seed on demand, one simulated hour at a time.

``seed + tenant + hour`` determines every message received in that hour, so a query touches only the
hours its window overlaps and a tenant with millions of rows costs little memory. Each row carries its
publish time (received + delay: invisible before) and a status timeline; what the API shows at time
``t`` is a pure function of the row and ``t``. The same function is the ground truth.
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from exotrace.simulator.config import SimTenant

US = 1_000_000
#: Microsoft keeps Received in 100 ns ticks: query bounds and rows are compared in ticks (``us * 10 + tick``).
TICKS_PER_US = 10
HOUR_US = 3600 * US
MINUTE_US = 60 * US
#: Average rows per message of the generated mix (multi-recipient mail, group expansion); measured.
ROWS_PER_MESSAGE = 2.34
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Relative mail volume per hour of day (UTC); mean 1.0.
_DIURNAL = [0.3, 0.25, 0.25, 0.3, 0.4, 0.6, 0.9, 1.3, 1.7, 1.8, 1.7, 1.6,
            1.4, 1.5, 1.6, 1.6, 1.5, 1.3, 1.0, 0.8, 0.6, 0.5, 0.4, 0.35]
_DIURNAL = [w * 24 / sum(_DIURNAL) for w in _DIURNAL]

_FIRST = ["alex", "maria", "li", "sven", "aisha", "jose", "chen", "olga", "kenji", "fatima", "liam",
          "noah", "emma", "lucas", "sofia", "omar", "ines", "ravi", "hana", "pierre", "zoe", "mateo"]
_LAST = ["smith", "garcia", "wang", "berg", "khan", "silva", "tanaka", "novak", "dubois", "rossi",
         "muller", "kowalski", "nguyen", "okafor", "jensen", "lopez"]
_EXTERNAL_DOMAINS = [
    "fabrikam.com", "example.co.uk", "mail.example.co.uk", "northwind.onmicrosoft.com", "tailspin.com.au",
    "adatum.de", "gmail.com", "outlook.com", "newsletter.wingtip.co.jp", "litware.io", "proseware.fr",
    "relecloud.onmicrosoft.com", "alpineski.ch", "bank.example.com.br", "xn--bcher-kva.de",
]
_GROUPS = ["all-staff", "sales", "support", "it-ops", "finance"]
_SUBJECTS = [
    "Quarterly Report", "RE: Invoice 4711", "FW: meeting notes", "Weekly digest", "Your order has shipped",
    "Rechnung Nr. 2024-118 – Übersicht", "会議の議事録", "Réunion de lundi", "🎉 Launch day!", "",
    "Password expiry notice", "PIM: A privileged directory role was assigned outside of PIM",
    "Sale ends tonight!!!", "Undeliverable: project plan", "O'Neil's \"draft\" <v2>", "Ποσοστά Q3",
    "Invitation: Design review @ Tue 10:00", "Re: Re: Re: lunch?", "   leading and trailing spaces   ",
    "Zahlungserinnerung", "Доставка заказа", "تقرير شهري",
]
#: The IPs the MaxMind test databases know (see shared/geoip/README.md), plus a few others.
_GEO_IPS = ["81.2.69.144", "216.160.83.56", "2a02:cf43:eae5:4877:400b:d6af:8d9f:b62b", "89.160.20.112",
            "1.128.0.0"]
#: Final-status mix per direction: (cumulative probability, status).
_FINAL_MIX: dict[str, tuple[tuple[float, str], ...]] = {
    "inbound": ((0.80, "Delivered"), (0.87, "FilteredAsSpam"), (0.91, "Quarantined"), (0.94, "Failed"),
                (0.95, "Pending"), (0.97, "Resolved"), (1.0, "None")),
    "outbound": ((0.92, "Delivered"), (0.98, "Failed"), (1.0, "Pending")),
    "internal": ((0.90, "Delivered"), (0.93, "Recalled"), (0.95, "Failed"), (0.98, "Resolved"),
                 (1.0, "Quarantined")),
    "ndr": ((1.0, "Delivered"),),
}
_HOSTS = ["MN2PR00MB0670.namprd00.prod.outlook.com", "DB9PR02MB7211.eurprd02.prod.outlook.com",
          "SY4P282MB1234.AUSP282.PROD.OUTLOOK.COM", "AM0PR06MB4321.eurprd06.prod.outlook.com"]


def to_us(when: datetime) -> int:
    """Aware datetime -> microseconds since the epoch."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // US, UTC).replace(microsecond=us % US)


def iso7(us: int, z: bool = True, tick: int = 0) -> str:
    """``2026-03-26T15:43:20.2718704Z``: the 7-digit form .NET emits (``z=False``: no zone, as RWS);
    ``tick`` is the seventh digit (100 ns)."""
    d = from_us(us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond:06d}{tick}" + ("Z" if z else "")


def iso_ticks(ticks: int, z: bool = True) -> str:
    """:func:`iso7` of a time in 100 ns ticks since the epoch."""
    us, tick = divmod(ticks, TICKS_PER_US)
    return iso7(us, z, tick)


def iso_short(us: int, z: bool = True) -> str:
    """``2025-11-29T14:22:31.109Z``: fraction with trailing zeros trimmed (Graph's output form)."""
    d = from_us(us)
    frac = f"{d.microsecond:06d}".rstrip("0")
    return d.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + ("Z" if z else "")


@dataclass(slots=True, frozen=True)
class Event:
    """One detail event (getDetailsByRecipient / MessageTraceDetail)."""

    at_us: int
    event: str
    action: str
    description: str


@dataclass(slots=True)
class Row:
    """One (message, recipient) row with its publish time and status timeline."""

    received_us: int
    trace_id: str
    message_id: str | None
    sender: str
    recipient: str
    rcpt_lower: str
    subject: str
    size: int
    from_ip: str | None
    to_ip: str | None
    organization: str
    direction: str
    #: When the row becomes visible through the API (received + publish delay).
    visible_us: int
    #: (time, canonical status) ascending; the first entry is at ``received_us``.
    timeline: tuple[tuple[int, str], ...]
    #: ``received_us`` as Graph writes it (computed once per message).
    received_text: str
    #: The seventh fractional digit of Received (100 ns), the part below ``received_us``.
    tick: int = 0

    @property
    def received_ticks(self) -> int:
        return self.received_us * TICKS_PER_US + self.tick

    def status_at(self, t_us: int) -> str:
        status = self.timeline[0][1]
        for when, st in self.timeline:
            if when <= t_us:
                status = st
            else:
                break
        return status

    def events_at(self, t_us: int) -> list[Event]:
        """Plausible detail events known at ``t_us``."""
        host = _HOSTS[int(self.trace_id[:2], 16) % len(_HOSTS)]
        out = [Event(self.received_us, "Receive", "", f"Message received by: {host}")]
        if self.direction == "inbound":
            out.append(Event(self.received_us + 2 * US, "Spam filter verdict", "",
                             "Spam filter verdict: SCL -1, the message was not spam."))
        for when, st in self.timeline:
            at = max(when, self.received_us + 3 * US)
            if at > t_us:
                break
            if st != "GettingStatus":
                out.append(_status_event(st, at, self))
        return out


def _status_event(status: str, when: int, row: Row) -> Event:
    if status == "Delivered":
        if row.direction == "outbound":
            return Event(when, "Send external", "", f"Message sent to {row.to_ip or 'the destination'}.")
        return Event(when, "Deliver", "", "The message was successfully delivered.")
    if status == "Expanded":
        return Event(when, "Expand", "", "The distribution group was expanded.")
    if status == "Pending":
        return Event(when, "Defer", "", "The message was deferred and will be retried.")
    if status == "Failed" or status == "None":
        return Event(when, "Fail", "RejectMessage", "Reason: [{LED=550 5.1.10 RESOLVER.ADR.RecipientNotFound}]")
    if status == "FilteredAsSpam":
        return Event(when, "Spam", "SetSpamConfidenceLevel", "The message was marked as spam.")
    if status == "Quarantined":
        return Event(when, "Quarantine", "MoveToQuarantine", "The message was quarantined.")
    if status == "Resolved":
        return Event(when, "Resolve", "", "The recipient was resolved to a different address.")
    if status == "Recalled":
        return Event(when, "Recall", "", "The message was recalled by the sender.")
    return Event(when, status, "", "")


class TenantProfile:
    """Users, groups and addresses of one tenant (derived from the seed)."""

    def __init__(self, tenant: SimTenant, seed: int) -> None:
        rng = random.Random(f"{seed}:{tenant.name}:profile")
        self.domains = tenant.all_domains()
        primary = self.domains[0]
        users: list[str] = []
        for i in range(60):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            dom = primary if i % 5 else rng.choice(self.domains)
            users.append(f"{first}.{last}{i}@{dom}")
        users += [f"o'neil@{primary}", f"first+tag@{primary}", f"Mixed.Case@{primary}"]
        self.users = users
        self.groups = {f"{g}@{primary}": rng.sample(users, rng.randint(3, 9)) for g in _GROUPS}
        ext: list[str] = []
        for dom in _EXTERNAL_DOMAINS:
            for _ in range(4):
                ext.append(f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}@{dom}")
        ext += ["noreply@azure.microsoft.com", "azure-noreply@microsoft.com", "news@newsletter.wingtip.co.jp"]
        self.external = ext
        self.group_names = list(self.groups)
        self.organization = tenant.organization
        #: addresses in a local domain (group addresses included)
        self.local_addresses = {a for a in users + self.group_names if a.rpartition("@")[2].lower() in self.domains}
        self.lower = {a: a.lower() for a in users + ext + self.group_names}


class TenantData:
    """Generates and caches one tenant's rows by hour bucket."""

    def __init__(self, tenant: SimTenant, seed: int, rows_per_day: int, late: bool = False,
                 cache_rows: int = 100_000) -> None:
        self.tenant = tenant
        self.seed = seed
        self.rows_per_day = max(0, rows_per_day)
        self.late = late
        self.profile = TenantProfile(tenant, seed)
        self._cache: OrderedDict[int, list[Row]] = OrderedDict()
        self._cached_rows = 0
        self._cache_budget = cache_rows
        self._lock = threading.Lock()

    # ---- buckets -------------------------------------------------------------------------------
    def bucket(self, hour: int) -> list[Row]:
        """Rows received in hour ``hour`` (hours since the epoch), sorted newest first, ties by recipient."""
        with self._lock:
            rows = self._cache.get(hour)
            if rows is not None:
                self._cache.move_to_end(hour)
                return rows
        rows = self._generate(hour)
        with self._lock:
            if hour in self._cache:  # generated meanwhile by another thread: keep one copy
                return self._cache[hour]
            self._cache[hour] = rows
            self._cached_rows += len(rows)
            while self._cached_rows > self._cache_budget and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_rows -= len(old)
        return rows

    def _generate(self, hour: int) -> list[Row]:
        rng = random.Random(f"{self.seed}:{self.tenant.name}:{hour}")
        # a local, not an attribute: two threads may generate two hours at once (server and ground truth)
        prefix = from_us(hour * HOUR_US).strftime("%Y-%m-%dT%H:")
        expected = self.rows_per_day / 24 * _DIURNAL[hour % 24] / ROWS_PER_MESSAGE
        messages = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
        rows: list[Row] = []
        for n in range(messages):
            rows.extend(self._message(rng, hour, n, prefix))
        rows.sort(key=_sort_key)
        return rows

    def _message(self, rng: random.Random, hour: int, n: int, prefix: str) -> list[Row]:
        """One message's rows; ``prefix`` is the hour as Graph writes it (``2026-05-01T12:``)."""
        p = self.profile
        rnd = rng.random
        bits = rng.getrandbits
        offset = int(rnd() * HOUR_US)
        received = hour * HOUR_US + offset
        trace_id = (f"{bits(32):08x}-{bits(16):04x}-{bits(16):04x}-"
                    f"{bits(16):04x}-{(0x08D0 << 32) | (hour & 0xFFFFFFFF):012x}")
        tick = int(trace_id[:2], 16) % TICKS_PER_US  # from bits drawn anyway: the seed's mail flow is unchanged
        secs, micro = divmod(offset, US)
        frac = f"{micro:06d}{tick}".rstrip("0")
        received_text = f"{prefix}{secs // 60:02d}:{secs % 60:02d}{'.' + frac if frac else ''}Z"
        roll = rnd()
        direction = ("inbound" if roll < 0.55 else "outbound" if roll < 0.75
                     else "internal" if roll < 0.95 else "ndr")
        users, external = p.users, p.external
        if direction == "inbound":
            sender = _pick(rnd, external)
            from_ip: str | None = _pick(rnd, _GEO_IPS) if rnd() < 0.4 else _random_ip(rng)
        elif direction == "ndr":
            sender = "<>"
            from_ip = None
        else:
            sender = _pick(rnd, users)
            from_ip = _random_ip(rng, internal=True)
        if from_ip is not None and rnd() < 0.02:
            from_ip = ""
        # recipients
        if direction == "ndr":
            rcpts = [_pick(rnd, users)]
        elif direction == "outbound":
            rcpts = [_pick(rnd, external)] if rnd() < 0.7 else rng.sample(external, 2 + int(rnd() * 3))
        else:
            rcpts = [_pick(rnd, users)] if rnd() < 0.7 else rng.sample(users, 2 + int(rnd() * 4))
            if rnd() < 0.12:
                rcpts.append(_pick(rnd, p.group_names))
            if direction == "internal" and rnd() < 0.2:
                rcpts.append(_pick(rnd, external))
        subject = _pick(rnd, _SUBJECTS)
        if direction == "ndr":
            subject = "Undeliverable: " + _pick(rnd, _SUBJECTS[:6])
        size = int(min(35_000_000, rng.lognormvariate(10.3, 1.2))) + 800
        msg_host = sender.rpartition("@")[2] or "ex.outlook.com"
        message_id: str | None = f"<{bits(64):016x}.{n}@{msg_host}>"
        if rnd() < 0.005:
            message_id = None
        # expand groups (group row + member rows), dedupe recipients
        expanded: list[tuple[str, bool]] = []
        seen: set[str] = set()
        for r in rcpts:
            members = p.groups.get(r)
            if r not in seen:
                seen.add(r)
                expanded.append((r, members is not None))
            for m in members or ():
                if m not in seen:
                    seen.add(m)
                    expanded.append((m, False))
        out: list[Row] = []
        local_set = p.local_addresses
        for addr, is_group in expanded:
            row_dir = direction
            if direction == "internal" and addr not in local_set:
                row_dir = "outbound"
            row_to_ip = _random_ip(rng) if row_dir == "outbound" else None
            delay = self._delay(rng)
            final = "Expanded" if is_group else self._final_status(rng, row_dir)
            timeline = self._timeline(rng, received, received + delay, final)
            out.append(Row(  # positional: measurably faster than keywords at millions of rows
                received, trace_id, message_id, sender, addr, p.lower[addr], subject, size + int(rnd() * 400),
                from_ip, row_to_ip, p.organization, row_dir, received + delay, timeline, received_text, tick,
            ))
        return out

    def _delay(self, rng: random.Random) -> int:
        r = rng.random()
        late_share = 0.25 if self.late else 0.07
        if r < 1 - late_share:
            return int((0.5 + 9.5 * rng.random()) * MINUTE_US)
        if r < 1 - late_share / 4:
            return int((10 + 170 * rng.random()) * MINUTE_US)
        return int((180 + 1260 * rng.random()) * MINUTE_US)

    @staticmethod
    def _final_status(rng: random.Random, direction: str) -> str:
        r = rng.random()
        for limit, status in _FINAL_MIX[direction]:
            if r < limit:
                return status
        return "Delivered"

    @staticmethod
    def _timeline(rng: random.Random, received: int, visible: int, final: str) -> tuple[tuple[int, str], ...]:
        """Provisional first (GettingStatus and/or Pending), then the final status a few minutes later."""
        settle = visible + int((1 + 14 * rng.random()) * MINUTE_US)
        if final == "Recalled":
            return ((received, "GettingStatus"), (settle, "Delivered"),
                    (settle + int((5 + 115 * rng.random()) * MINUTE_US), "Recalled"))
        if final == "Pending":  # stuck in retry for the whole simulated life of the row
            return ((received, "GettingStatus"), (settle, "Pending"))
        r = rng.random()
        if r < 0.08 and final in ("Delivered", "Failed"):  # deferred, retried, then final
            return ((received, "GettingStatus"), (settle, "Pending"),
                    (settle + int((30 + 210 * rng.random()) * MINUTE_US), final))
        if r < 0.7:
            return ((received, "GettingStatus"), (settle, final))
        return ((received, final),)

    # ---- queries -------------------------------------------------------------------------------
    def iter_desc(self, start: int, end: int, now_us: int, horizon_us: int,
                  after: tuple[int, str] | None = None,
                  match: Callable[[Row], bool] | None = None,
                  hours: list[int] | None = None) -> Iterator[Row]:
        """Visible rows with ``start <= received <= end`` (100 ns ticks), newest first, ties by recipient
        ascending.

        ``after=(received ticks, recipient)`` resumes after that row (Graph's continuation semantics).
        """
        lo = max(start, horizon_us * TICKS_PER_US)
        if end < lo:
            return
        top_hour, low_hour = end // TICKS_PER_US // HOUR_US, lo // TICKS_PER_US // HOUR_US
        candidates = range(top_hour, low_hour - 1, -1) if hours is None else sorted(
            (h for h in set(hours) if low_hour <= h <= top_hour), reverse=True)
        # first position in a bucket: past rows newer than end, and past the continuation row
        first_key = (-end, "") if after is None else max((-end, ""), (-after[0], after[1]))
        for hour in candidates:
            rows = self.bucket(hour)
            if after is None:
                i = bisect.bisect_left(rows, first_key, key=_sort_key)
            else:
                i = bisect.bisect_right(rows, first_key, key=_sort_key)
            for row in itertools.islice(rows, i, None):
                if row.received_ticks < lo:
                    break
                if row.visible_us > now_us:
                    continue
                if match is not None and not match(row):
                    continue
                yield row

    def find(self, trace_id: str, recipient: str | None = None) -> list[Row]:
        """Rows of one message (by the hour encoded in its trace id), optionally one recipient."""
        hour = hour_of_trace_id(trace_id)
        if hour is None:
            return []
        tid, rc = trace_id.lower(), (recipient or "").lower()
        return [r for r in self.bucket(hour) if r.trace_id == tid and (not rc or r.rcpt_lower == rc)]


def _sort_key(row: Row) -> tuple[int, str]:
    """Newest first, ties by recipient ascending."""
    return (-row.received_ticks, row.rcpt_lower)


def hour_of_trace_id(trace_id: str) -> int | None:
    """The hour bucket encoded in the last group of a simulated trace id (None if not one of ours)."""
    last = trace_id.strip().lower().rpartition("-")[2]
    if len(last) != 12 or not last.startswith("08d0"):
        return None
    try:
        return int(last[4:], 16)
    except ValueError:
        return None


def _pick(rnd: Callable[[], float], seq: list[str]) -> str:
    return seq[int(rnd() * len(seq))]


def _random_ip(rng: random.Random, internal: bool = False) -> str:
    rnd = rng.random
    r = rnd()
    if internal:
        if r < 0.5:
            return f"10.{int(rnd() * 256)}.{int(rnd() * 256)}.{1 + int(rnd() * 254)}"
        return f"2603:10a6:{int(rnd() * 0x10000):x}::{1 + int(rnd() * 0xFFFF):x}"
    if r < 0.6:
        return f"40.107.{int(rnd() * 256)}.{1 + int(rnd() * 254)}"
    if r < 0.8:
        return f"209.85.{128 + int(rnd() * 128)}.{1 + int(rnd() * 254)}"
    return f"2a01:111:f403:{int(rnd() * 0x10000):x}::{1 + int(rnd() * 0xFFFF):x}"
