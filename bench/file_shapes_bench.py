"""File reading per shape: the same rows as NDJSON, a pretty ``ConvertTo-Json`` array, a one-line
(``-Compress``) array, and appended pretty objects of which every tenth is damaged.

Reports, per shape, the CPU seconds of reading every record (``read_file``, no normalization) as a ratio to
one ``orjson.loads`` of the one-line array measured in the same run, and the peak traced memory as a ratio
to the file's size (a second pass under tracemalloc). No targets: it guards against a shape going
quadratic or holding the whole file decoded (both happened once; docs/benchmarks.md).

    python bench/file_shapes_bench.py [--rows 40000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_rows import generate  # noqa: E402

from exotrace.sources.file import read_file  # noqa: E402


def write_shapes(folder: Path, rows: int) -> dict[str, Path]:
    lines = generate(rows)
    records = [orjson.loads(line) for line in lines]
    shapes = {
        "ndjson": b"\n".join(lines) + b"\n",
        "pretty array": orjson.dumps(records, option=orjson.OPT_INDENT_2),
        "one-line array": orjson.dumps(records),
        "appended, 10% damaged": b"\n".join(
            orjson.dumps(r, option=orjson.OPT_INDENT_2).replace(b'": ', b'" ', 1) if i % 10 == 0
            else orjson.dumps(r, option=orjson.OPT_INDENT_2) for i, r in enumerate(records)) + b"\n",
    }
    paths = {}
    for n, (name, data) in enumerate(shapes.items()):
        paths[name] = folder / f"shape{n}.json"
        paths[name].write_bytes(data)
    return paths


def read_all(path: Path) -> int:
    return sum(1 for _ in read_file(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shapes(Path(tmp), args.rows)
        start = time.process_time()
        orjson.loads(paths["one-line array"].read_bytes())
        base = time.process_time() - start
        print(f"{args.rows:,} rows; baseline: orjson.loads of the one-line array, {base:.3f} s CPU")
        print(f"{'shape':24} {'MB':>6} {'items':>8} {'CPU s':>7} {'x base':>7} {'peak/size':>9}")
        for name, path in paths.items():
            start = time.process_time()
            items = read_all(path)
            seconds = time.process_time() - start
            tracemalloc.start()
            read_all(path)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            size = path.stat().st_size
            print(f"{name:24} {size / 1e6:6.1f} {items:8,} {seconds:7.2f} {seconds / base:7.1f} {peak / size:9.2f}")


if __name__ == "__main__":
    main()
