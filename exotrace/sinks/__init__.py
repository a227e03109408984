"""Sinks: ship normalized documents to SIEMs and files, at least once, with backpressure.

Usage::

    from exotrace.sinks import SinkPipeline, load_sinks
    pipeline = SinkPipeline(load_sinks(config["sink"]), state_dir=Path(".exotrace-spool"))
    await pipeline.start()
    ticket = await pipeline.submit(documents)
    await pipeline.wait_acked(ticket)
    await pipeline.close()

The sink contract is in :mod:`exotrace.sinks.base`; delivery machinery in :mod:`exotrace.sinks.pipeline`.
"""

from __future__ import annotations

from exotrace.sinks.base import Record, SendResult, Sink
from exotrace.sinks.config import SINK_TYPES, Secret, SinkConfig, example_config, load_sinks
from exotrace.sinks.health import SinkHealth, check_sink_health, check_sinks
from exotrace.sinks.pipeline import (
    METRIC_NAMES,
    SinkPipeline,
    SyncRunResult,
    SyncSinkPipeline,
    build_sink,
    read_metrics,
    run_sync,
)

__all__ = [
    "METRIC_NAMES",
    "SINK_TYPES",
    "Record",
    "Secret",
    "SendResult",
    "Sink",
    "SinkConfig",
    "SinkHealth",
    "SinkPipeline",
    "SyncRunResult",
    "SyncSinkPipeline",
    "build_sink",
    "check_sink_health",
    "check_sinks",
    "example_config",
    "load_sinks",
    "read_metrics",
    "run_sync",
]
