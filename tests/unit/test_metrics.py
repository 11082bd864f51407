"""The hot-path metric families export exactly what prometheus_client's own would."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.kernel.metrics import _STEP_BUCKETS, Metrics


def _lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    """Sample lines of one family, without the ``_created`` series only the library has."""
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines()
                  if line.startswith(prefix) and "_created" not in line)


def test_hot_histogram_matches_prometheus_client() -> None:
    ours = CollectorRegistry()
    m = Metrics("m1", "ground", ours)
    theirs = CollectorRegistry()
    ref = Histogram("twin_clock_ack_latency_seconds", "x", ("mission", "service", "peer"),
                    buckets=_STEP_BUCKETS, registry=theirs)
    rng = random.Random(6)
    # Values on bucket bounds too: "le" is inclusive in both.
    values = [*_STEP_BUCKETS, 0.0, 10.0, *(rng.expovariate(1000.0) for _ in range(500))]
    for peer in ("orbiter", "relay"):
        cell = m.ack_latency.cell(peer)
        for v in values:
            m.ack_latency.observe(cell, v)
            ref.labels("m1", "ground", peer).observe(v)
    assert _lines(ours, "twin_clock_ack_latency") == _lines(theirs, "twin_clock_ack_latency")
    assert ours.get_sample_value("twin_clock_ack_latency_seconds_count",
                                 {"mission": "m1", "service": "ground", "peer": "relay"}) \
        == len(values)


def test_hot_counter_matches_prometheus_client() -> None:
    ours = CollectorRegistry()
    m = Metrics("m1", "orbiter", ours)
    theirs = CollectorRegistry()
    ref = Counter("twin_bus_messages_in", "x", ("mission", "service", "kind"), registry=theirs)
    for kind, n in (("tick", 7), ("command", 2)):
        for _ in range(n):
            m.bus_in.inc(kind)
            ref.labels("m1", "orbiter", kind).inc()
    m.steps.touch()
    assert _lines(ours, "twin_bus_messages_in") == _lines(theirs, "twin_bus_messages_in")
    assert ours.get_sample_value("twin_clock_steps_total",
                                 {"mission": "m1", "service": "orbiter"}) == 0.0


def test_scrape_while_the_loop_counts() -> None:
    """A scrape runs on the HTTP server's thread while the loop adds series."""
    reg = CollectorRegistry()
    m = Metrics("m1", "relay", reg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_latest(reg)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    for i in range(20_000):
        m.bus_out.inc(f"kind{i % 500}")
        m.ack_latency.observe(m.ack_latency.cell(f"peer{i % 300}"), 1e-4 * (i % 7))
    stop.set()
    thread.join()
    assert errors == []
    assert sum(m.bus_out.values.values()) == 20_000
