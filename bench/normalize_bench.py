"""Normalization throughput: file -> ECS NDJSON with GeoIP, PSL and direction on, on one core.

Reports rows/s and the ratio to a plain ``orjson.loads`` + ``orjson.dumps`` pass over the same file,
measured in the same run as CPU time of this process, so other load on the machine matters less
(targets: >= 50k rows/s, within 8x of the baseline).

    python bench/normalize_bench.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_rows import generate  # noqa: E402

from exotrace.ingest import ingest  # noqa: E402
from exotrace.normalize import NormalizeOptions, Normalizer  # noqa: E402
from exotrace.sources.file import read_paths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def baseline(path: Path, out: Path) -> float:
    start = time.process_time()
    with path.open("rb") as src, out.open("wb") as dst:
        for line in src:
            dst.write(orjson.dumps(orjson.loads(line)) + b"\n")
    return time.process_time() - start


def full_path(path: Path, out: Path) -> tuple[float, int]:
    normalizer = Normalizer(NormalizeOptions(local_domains=("contoso.com", "contoso.onmicrosoft.com"),
                                             geoip_dir=ROOT / "tests" / "data" / "geoip"))
    start = time.process_time()
    with out.open("wb") as dst:
        stats = ingest(read_paths([path]), normalizer, out=dst)
    return time.process_time() - start, stats.written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "rows.ndjson"
        src.write_bytes(b"\n".join(generate(args.rows)) + b"\n")
        out = Path(tmp) / "out.ndjson"
        base = min(baseline(src, out) for _ in range(args.repeat))
        runs = [full_path(src, out) for _ in range(args.repeat)]
        full = min(t for t, _ in runs)
        written = runs[0][1]
    assert written == args.rows, f"wrote {written} of {args.rows} rows"
    rate = args.rows / full
    print(f"rows                      {args.rows}")
    print(f"baseline orjson loads+dumps {args.rows / base:>10,.0f} rows/s")
    print(f"exotrace file -> ECS        {rate:>10,.0f} rows/s  (target >= 50,000)")
    print(f"ratio to baseline           {full / base:>10.2f}x     (target <= 8x)")


if __name__ == "__main__":
    main()
