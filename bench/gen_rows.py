"""Generate a varied PowerShell-style NDJSON message-trace export for benchmarks.

IPv4 and IPv6 (including the MaxMind test IPs), many domains (co.uk, onmicrosoft.com tenants),
every status, null senders, unicode subjects, Graph- and legacy-shaped rows mixed.
"""

from __future__ import annotations

import argparse
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

STATUSES = ["Delivered"] * 12 + ["GettingStatus", "Pending", "Expanded", "Failed", "FilteredAsSpam", "Quarantined"]
TEST_IPS = ["81.2.69.144", "216.160.83.56", "89.160.20.112", "1.128.0.0", "2a02:cf43:eae5:4877:400b:d6af:8d9f:b62b"]
SUFFIXES = ["com", "co.uk", "de", "fr", "onmicrosoft.com", "com.au", "org", "io", "gov.uk", "co.jp"]
SUBJECTS = ["Quarterly report", "Re: invoice {n}", "Réunion lundi", "会議の件", "", "Your parcel {n}",
            "Password expiry"]


def generate(rows: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    words = ["fabrikam", "tailspin", "wingtip", "adatum"] * 500
    domains = [f"{w}{i}.{rnd.choice(SUFFIXES)}" for i, w in enumerate(words)]
    local = ["contoso.com", "contoso.onmicrosoft.com"]
    start = datetime(2026, 10, 1, tzinfo=UTC)
    out: list[bytes] = []
    for n in range(rows):
        inbound = rnd.random() < 0.6
        ext = f"user{rnd.randrange(5000)}@{rnd.choice(domains)}"
        loc = f"staff{rnd.randrange(800)}@{rnd.choice(local)}"
        sender, recipient = (ext, loc) if inbound else (loc, ext)
        if rnd.random() < 0.02:
            sender = "<>"
        ip = rnd.choice(TEST_IPS) if rnd.random() < 0.3 else (
            f"{rnd.randrange(1, 223)}.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
            if rnd.random() < 0.8 else f"2001:db8:{rnd.randrange(65536):x}::{rnd.randrange(65536):x}")
        received = start + timedelta(seconds=n * 3 + rnd.random())
        trace_id = str(uuid.UUID(int=rnd.getrandbits(128)))
        status = rnd.choice(STATUSES)
        subject = rnd.choice(SUBJECTS).format(n=n)
        if rnd.random() < 0.2:
            row = {"id": trace_id, "messageId": f"<{n}@{sender.partition('@')[2] or 'x'}>",
                   "receivedDateTime": received.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "senderAddress": sender,
                   "recipientAddress": recipient, "subject": subject, "size": rnd.randrange(0, 5_000_000),
                   "fromIP": ip, "toIP": "", "status": status[0].lower() + status[1:]}
        else:
            row = {"Organization": "contoso.onmicrosoft.com", "MessageId": f"<{n}@{sender.partition('@')[2] or 'x'}>",
                   "Received": received.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z", "SenderAddress": sender,
                   "RecipientAddress": recipient, "Subject": subject or None, "Status": status,
                   "ToIP": None if inbound else rnd.choice(TEST_IPS), "FromIP": ip,
                   "Size": rnd.randrange(0, 5_000_000), "MessageTraceId": trace_id,
                   "StartDate": "2026-10-01T00:00:00Z", "EndDate": "2026-10-11T00:00:00Z", "Index": n % 5000}
        out.append(orjson.dumps(row))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.out.write_bytes(b"\n".join(generate(args.rows, args.seed)) + b"\n")


if __name__ == "__main__":
    main()
