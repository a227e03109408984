"""The collector: many tenants in one asyncio process, each with its own quota, ledger rows and retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from exotrace.archive import Archive
from exotrace.clock import Clock, SystemClock
from exotrace.config import AppConfig, TenantConfig
from exotrace.state.ledger import MIGRATIONS

if TYPE_CHECKING:
    from exotrace.collect.runner import ProgressFn, TenantReport

log = logging.getLogger("exotrace.collect")

__all__ = ["TenantReport", "open_archive", "run_collector"]


#: SQLite page cache of the collector's connection (MiB): bounds memory during long backfills.
CACHE_MB = 32


def open_archive(path: Any) -> Archive:
    """Open the archive and make sure the ledger tables exist."""
    archive = Archive.open(path)
    archive.conn.execute(f"PRAGMA cache_size = -{CACHE_MB * 1024}")
    archive.ensure_schema("collector", MIGRATIONS)
    return archive


async def run_collector(cfg: AppConfig, *, mode: str = "once", since: timedelta | None = None,
                        tenants: Sequence[TenantConfig] | None = None, clock: Clock | None = None,
                        stop: asyncio.Event | None = None, signals: bool = False,
                        progress: ProgressFn | None = None,
                        geoip_dir: str | None = None) -> list[TenantReport]:
    """Collect every tenant concurrently; return one report per tenant.

    ``mode``: ``once`` (every window up to now complete), ``settle`` (and settled), ``daemon``.
    ``progress`` is called with (tenant, seconds of the backfill span collected, its seconds, rows).
    """
    from exotrace.collect.runner import TenantRunner
    from exotrace.collect.shipper import Shipper

    clock = clock or SystemClock()
    stop = stop or asyncio.Event()
    archive = await asyncio.to_thread(open_archive, cfg.archive_path)
    pipeline = None
    shipper = None
    # one writer thread for every tenant: SQLite has one writer, and one malloc arena stays compact
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="exotrace-db")
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    try:
        if cfg.sinks:
            from exotrace.sinks.pipeline import SinkPipeline

            pipeline = SinkPipeline.from_tables(list(cfg.sinks), state_dir=f"{cfg.archive_path}.spool",
                                                clock=clock, base=cfg.folder)
            await pipeline.start()
            shipper = Shipper(pipeline, archive)
            await shipper.replay()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, _on_signal, stop, sig)
                    installed.append(sig)
        runners = [TenantRunner(t, archive, clock, mode=mode, since=since, stop=stop, shipper=shipper,
                                progress=progress, executor=executor, geoip=cfg.geoip,
                                geoip_dir=geoip_dir or (str(cfg.geoip_dir) if cfg.geoip_dir else None),
                                preserve_original=cfg.preserve_original)
                   for t in (tenants or cfg.tenants)]
        return list(await asyncio.gather(*(r.run() for r in runners)))
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if pipeline is not None:
            await pipeline.close()
        # close on the writer thread: after any commit a cancelled read left running there
        await loop.run_in_executor(executor, archive.close)
        executor.shutdown(wait=True)


def __getattr__(name: str) -> Any:
    # the runner imports the sources, which import this package's small modules (quota, stop): load it lazily
    if name == "TenantReport":
        from exotrace.collect.runner import TenantReport

        return TenantReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _on_signal(stop: asyncio.Event, sig: int) -> None:
    if stop.is_set():
        return
    log.warning("signal=%s received: finishing the pages in hand, then exiting", signal.Signals(sig).name)
    stop.set()
