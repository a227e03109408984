"""Sink configuration, the file and stdout sinks, and the disk spool on its own."""

from __future__ import annotations

import asyncio
import gzip
import time
import tomllib
from pathlib import Path

import orjson
import pytest
from sink_helpers import make_docs, numbers

from exotrace.errors import ConfigError
from exotrace.sinks import SINK_TYPES, Record, Secret, SinkPipeline, example_config, load_sinks
from exotrace.sinks.buffer.spool import Spool
from exotrace.sinks.config import ElasticsearchSinkConfig, FileSinkConfig

# -- config -----------------------------------------------------------------------------------------


def test_every_example_loads() -> None:
    for t in SINK_TYPES:
        tables = tomllib.loads(example_config(t))["sink"]
        configs = load_sinks(tables)
        assert configs[0].type == t and configs[0].name == t


def test_unknown_key_and_inline_secret_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown key 'hots'") as e:
        load_sinks([{"type": "elasticsearch", "hots": ["http://x"]}])
    assert e.value.key == "hots"
    with pytest.raises(ConfigError, match="api_key must be a reference") as e:
        load_sinks([{"type": "elasticsearch", "hosts": ["http://x"], "api_key": "c2VjcmV0"}])
    assert e.value.key == "api_key"
    with pytest.raises(ConfigError, match="missing required key 'token'"):
        load_sinks([{"type": "splunk_hec", "url": "https://splunk:8088"}])
    with pytest.raises(ConfigError, match="unknown or missing type 'kafka'"):
        load_sinks([{"type": "kafka"}])
    with pytest.raises(ConfigError, match="used twice"):
        load_sinks([{"type": "stdout", "name": "a"}, {"type": "stdout", "name": "a"}])
    with pytest.raises(ConfigError, match="mode must be one of"):
        load_sinks([{"type": "elasticsearch", "hosts": ["http://x"], "mode": "upsert"}])
    with pytest.raises(ConfigError, match="looks like a secret"):
        load_sinks([{"type": "http", "url": "http://x", "headers": {"Authorization": "Bearer x"}}])
    with pytest.raises(ConfigError, match="needs intake_key"):
        load_sinks([{"type": "http", "url": "http://x", "preset": "sekoia"}])
    with pytest.raises(ConfigError, match="must be true or false"):
        load_sinks([{"type": "stdout", "required": "yes"}])


def test_defaults_names_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("EXO_KEY", "from-env")
    a, b = load_sinks([{"type": "elasticsearch", "hosts": ["https://es:9200"], "api_key": f"file:{key_file}"},
                       {"type": "elasticsearch", "hosts": ["https://es:9200"], "api_key": "env:EXO_KEY",
                        "required": False}])
    assert isinstance(a, ElasticsearchSinkConfig)
    assert (a.name, b.name, a.required, b.required) == ("elasticsearch", "elasticsearch-2", True, False)
    assert a.mode == "data_stream" and a.namespace == "default" and a.verify_certs
    assert a.api_key is not None and a.api_key.get() == "from-file"
    assert b.api_key is not None and b.api_key.get() == "from-env"
    assert "from-env" not in repr(b) and "env:EXO_KEY" in repr(b)
    with pytest.raises(ConfigError, match="NOPE is not set"):
        Secret("env:NOPE").get()


# -- file and stdout sinks --------------------------------------------------------------------------


def _read_all(folder: Path, name: str) -> list[dict]:
    docs = []
    for p in sorted(folder.glob(name + "*")):
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        docs.extend(orjson.loads(x) for x in data.splitlines())
    return docs


def test_file_rotation_by_size_with_gzip(tmp_path: Path) -> None:
    out = tmp_path / "out" / "trace.ndjson"

    async def main() -> None:
        table = {"type": "file", "path": str(out), "rotate_bytes": 20_000, "gzip": True, "batch_max_events": 10}
        async with SinkPipeline(load_sinks([table]), tmp_path / "state") as p:
            for i in range(0, 100, 10):
                t = await p.submit(make_docs(i, i + 10))
                assert await p.wait_acked(t, timeout=5)

    asyncio.run(main())
    rotated = sorted(out.parent.glob("trace.ndjson.*.gz"))
    assert len(rotated) >= 3
    for p in rotated:
        assert len(gzip.decompress(p.read_bytes())) <= 20_000
    assert sorted(numbers(_read_all(out.parent, "trace.ndjson"))) == list(range(100))


def test_file_rotation_by_time_survives_restart(tmp_path: Path) -> None:
    out = tmp_path / "t.ndjson"
    table = {"type": "file", "path": str(out), "rotate_interval": 3600, "rotate_bytes": 0}

    async def write(a: int, b: int) -> None:
        async with SinkPipeline(load_sinks([table]), tmp_path / "state") as p:
            assert await p.wait_acked(await p.submit(make_docs(a, b)), timeout=5)

    asyncio.run(write(0, 5))
    marker = tmp_path / ".t.ndjson.opened"
    assert marker.exists()
    asyncio.run(write(5, 10))
    assert not list(tmp_path.glob("t.ndjson.*"))  # younger than an hour: no rotation
    marker.write_text(f"{time.time() - 7200:.3f}")  # the file is now two hours old
    asyncio.run(write(10, 15))
    rotated = list(tmp_path.glob("t.ndjson.2*"))
    assert len(rotated) == 1
    assert numbers([orjson.loads(x) for x in rotated[0].read_bytes().splitlines()]) == list(range(10))
    assert numbers([orjson.loads(x) for x in out.read_bytes().splitlines()]) == list(range(10, 15))


def test_stdout_sink(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    async def main() -> None:
        async with SinkPipeline(load_sinks([{"type": "stdout"}]), tmp_path / "state") as p:
            assert await p.wait_acked(await p.submit(make_docs(0, 3)), timeout=5)

    asyncio.run(main())
    out = capsysbinary.readouterr().out
    assert numbers([orjson.loads(x) for x in out.splitlines()]) == [0, 1, 2]


def test_file_config_is_typed() -> None:
    (c,) = load_sinks([{"type": "file", "path": "x.ndjson", "rotate_interval": 60}])
    assert isinstance(c, FileSinkConfig) and c.rotate_interval == 60.0 and c.rotate_bytes == 100 * 1024 * 1024


# -- spool ------------------------------------------------------------------------------------------


def _recs(a: int, b: int) -> list[Record]:
    return [Record(i, orjson.dumps({"n": i}), key=f"k|{i}", fingerprint=f"fp{i}") for i in range(a, b)]


def test_spool_order_commit_and_reopen(tmp_path: Path) -> None:
    s = Spool(tmp_path, segment_bytes=200)
    assert s.open() == []
    s.append(_recs(10, 20))
    s.append(_recs(20, 30))
    assert s.unread == 20 and s.peek_seq() == 10
    got = s.read(7, 10_000)
    assert [r.seq for r in got] == list(range(10, 17)) and got[0].key == "k|10" and got[0].fingerprint == "fp10"
    s.commit()
    s.write_older(_recs(1, 5))  # memory buffer persisted at shutdown: older than everything unread
    s.close()

    s2 = Spool(tmp_path, segment_bytes=200)
    assert s2.open() == [(1, 4), (17, 29)]
    seqs = []
    while s2.has_unread():
        seqs += [r.seq for r in s2.read(4, 10_000)]
        s2.commit()
    assert seqs == [1, 2, 3, 4] + list(range(17, 30))
    assert not list(tmp_path.glob("*.seg"))


def test_spool_repairs_a_torn_line_and_drops_oldest(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.open()
    s.append(_recs(1, 4))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as fh:
        fh.write(b'4\tfp4\t"k"\t{"n":')  # the process died mid-write
    s2 = Spool(tmp_path)
    assert s2.open() == [(1, 3)]
    assert [r.seq for r in s2.read(10, 10_000)] == [1, 2, 3]
    s2.append(_recs(5, 7))  # a new segment (nothing unread)
    assert s2.drop_oldest() == 0  # the first segment was already read
    assert s2.unread == 2
    assert s2.drop_oldest() == 2 and s2.unread == 0


def test_spool_write_older_keeps_sequence_order_across_segments(tmp_path: Path) -> None:
    """Memory records on both sides of an existing segment are split so replay stays in seq order."""
    s = Spool(tmp_path)
    s.open()
    s.append(_recs(115, 200))
    s.write_older(_recs(100, 115) + _recs(200, 231))
    assert s.peek_seq() == 100
    s.close()
    s2 = Spool(tmp_path)
    s2.open()
    seqs = []
    while s2.has_unread():
        seqs += [r.seq for r in s2.read(7, 10_000)]
        s2.commit()
    assert seqs == list(range(100, 231))


def test_spool_lines_keep_the_observation_version_and_old_lines_still_read() -> None:
    from exotrace.sinks.buffer.spool import decode_line, encode_line

    record = Record(7, b'{"a":"tab\\tinside"}', key="t|u@x.com", fingerprint="fp=", version=123)
    back = decode_line(encode_line(record))
    assert (back.seq, back.raw, back.key, back.fingerprint, back.version) == (7, record.raw, "t|u@x.com", "fp=", 123)
    old = decode_line(b'8\tfp2=\t"t|v@x.com"\t{"b":1}\n')  # a line spooled before versions were
    assert (old.seq, old.raw, old.key, old.fingerprint, old.version) == (8, b'{"b":1}', "t|v@x.com", "fp2=", 0)


@pytest.mark.parametrize("table", [
    {"type": "elasticsearch", "hosts": ["https://elastic:Hunter2-inline@es:9200"]},
    {"type": "http", "url": "https://bob:Hunter2-inline@intake.example/ingest"},
    {"type": "splunk_hec", "url": "https://x:Hunter2-inline@splunk:8088", "token": "env:EXO_UNSET"},
])
def test_credentials_written_into_a_sink_url_are_refused(table: dict) -> None:
    with pytest.raises(ConfigError, match="credentials are not accepted inline in a URL") as e:
        load_sinks([table])
    assert "Hunter2" not in str(e.value)


@pytest.mark.parametrize("header", ["X-Functions-Key", "Ocp-Apim-Subscription-Key", "X-Auth-Key", "Authentication",
                                    "X-Sekoia-Intake-Key"])
def test_secret_looking_headers_are_refused_inline(header: str) -> None:
    with pytest.raises(ConfigError, match="looks like a secret"):
        load_sinks([{"type": "http", "url": "http://x", "headers": {header: "s3cr3t"}}])


def test_a_file_sink_path_must_name_a_file(tmp_path: Path) -> None:
    for path, needle in (("", "path must name a file"), (str(tmp_path), "is a folder")):
        with pytest.raises(ConfigError, match=needle) as e:
            load_sinks([{"type": "file", "path": path}])
        assert e.value.key == "path"
