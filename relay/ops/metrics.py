"""Prometheus metrics of a TURN node, read from its plain counters at scrape time.

Owns the metric names, their labels and the translation from the node's counters
(`trelay.node.data_path.DataPathCounters` / `TransportCounters`, `trelay.turn.stats.ServerStats`,
the allocation table and the relay port pool) to Prometheus metric families. Nothing
here runs per packet: the data path adds plain integers once per batch, and a scrape
reads them (design §4).

Metrics (base units, `_total` counters, and no per-user or per-allocation label, so the
number of series is bounded whatever the traffic):

    trelay_allocations_active{transport}                 gauge    udp|tcp|tls|dtls
    trelay_allocations_created_total{transport}          counter
    trelay_allocations_ended_total{transport,reason}     counter  expired|deleted|shutdown|admin
    trelay_allocations_moved_total{transport}            counter  RFC 8016 mobility
    trelay_permissions_active                            gauge
    trelay_channels_active                               gauge
    trelay_relayed_datagrams_total{direction,transport}  counter  client_to_peer|peer_to_client
    trelay_relayed_bytes_total{direction,transport}      counter  payload bytes
    trelay_dropped_datagrams_total{reason}               counter  `trelay.turn.stats.Drop`,
                                                                  and socket_buffer: the
                                                                  kernel's, buffer full
    trelay_requests_total{method,code}                   counter  code "200" for success
    trelay_request_duration_seconds{method}              histogram, control path only
    trelay_auth_challenges_total                         counter  401 challenges (no credentials)
    trelay_auth_failures_total{reason}                   counter  `trelay.turn.auth.AuthFailure`
                                                                  but "missing"
    trelay_quota_rejections_total{quota}                 counter  `trelay.turn.stats.Quota`:
                                                                  user, total, ports, per source...
    trelay_relay_ports{state}                            gauge    free|in_use (with a range)
    trelay_ready                                         gauge    1 ready, 0 not
    trelay_draining                                      gauge    1 while the node drains
    trelay_fleet_connected                               gauge    1 Redis answers, 0 not ([fleet])
    trelay_fleet_redirecting                             gauge    1 while new Allocates get 300
    trelay_usage_records_total{sink}                     counter  log|stream (`trelay.node.usage`)
    trelay_usage_queue_records                           gauge    records waiting for Redis
    trelay_revocations{source}                           gauge    file|fleet: identities held
    trelay_placement_fallbacks_total                     counter  static ICE URIs handed out
                                                                  ([fleet], the token API)
    trelay_tls_handshake_failures_total                  counter  failed TLS and DTLS
                                                                  handshakes
    trelay_resource_exhaustion_total{resource,what}     counter  descriptors|memory;
                                                                  accept|relay_socket|
                                                                  channel_socket|
                                                                  peer_connection refused
    trelay_gso_sends_total                               counter  GSO sendmsg calls (runs)
    trelay_gso_datagrams_total                           counter  datagrams sent in them
    trelay_gso_fallbacks_total                           counter  sockets where GSO failed
                                                                  and sends went one by one
    trelay_worker_handovers_total{kind}                  counter  with --workers N, what
                                                                  crossed to another worker
                                                                  (`HANDOVER_KINDS`)
    trelay_build_info{version,python}                    gauge    1
    process_*                                            prometheus_client's ProcessCollector

The challenge is not a failure: every client's first request (an Allocate without
credentials) is answered 401 with a nonce (RFC 8489 §9.2.4 step 1), so its count grows
with the calls. It has its own counter, `trelay_auth_challenges_total`, and
`trelay_auth_failures_total` counts only requests that tried to authenticate and failed,
which is what an operator means by an authentication failure (and what the
`TrelayAuthFailureSpike` alert watches).

The fleet's moving parts (design §9):

- `trelay_fleet_redirecting` is 1 while the overflow task (`trelay.fleet.overflow`) has
  named other nodes of the fleet in the core's `Redirection` (this node is overloaded or
  draining), so new Allocates are answered 300 Try Alternate; those answers are counted
  by `trelay_requests_total{method="allocate",code="300"}`, as every response is (the
  core counts the `Reply` it sends). 0 without a fleet.
- `trelay_usage_records_total{sink}` counts usage records written to the fleet's stream
  (`stream`) or as log lines (`log`: always without a fleet; in a fleet only when the
  queue in front of Redis is full, or a stopping process could not flush it), and
  `trelay_usage_queue_records` is that queue now (`trelay.fleet.usage_stream`). A node in
  a fleet whose records go to the log while its queue is full has lost Redis for long:
  the `TrelayUsageRecordsToLog` alert.
- `trelay_revocations{source}` (`RevocationCollector`): identities the process's
  revocation list holds, by source (`file`: the revocations file and the token API's
  writes; `fleet`: Redis), expired ones included until their source's next reload; with
  workers, the supervisor's copy, which follows the same sources as its workers'.
- `trelay_placement_fallbacks_total` (`PlacementCollector`, only with `[fleet]`): ICE
  server requests the token API answered from its static list because the node listing
  from Redis was older than the registry's TTL (`trelay.fleet.directory`).

Every label value is an enum value the deciding code chose (`Drop`, `AuthFailure`,
`Quota`, `EndReason`) or a (method, code) pair the core counted from its own `Reply`:
nothing here decodes a response or reads reason text, and the core's drops and the data
path's are counted by the same `Drop` and simply added.

Invariants: each node has its own `CollectorRegistry` (never the global one), so one
process can run several nodes (tests do); a scrape must run in the node's trio thread
(the HTTP app's endpoint is async), so the tables it walks do not change under it.

Several worker processes (design §4, `trelay.process.workers`): what a scrape reads is first
turned into a `NodeSnapshot`, a plain picklable value, and `NodeCollector` publishes the
sum (`combine`) of the snapshots its `source` returns. With one process the source is
its node; with `workers = N` it is the latest snapshot each worker sent the supervisor
(every second, and when a scrape asks), plus `counters_only` of the last snapshot of
every worker that has ended, so counters never go backwards when a worker restarts.
Counters, gauges and histogram buckets all add up across workers, except
`trelay_draining`, which is 1 while any worker drains (`_ANY_FIELDS`); `trelay_ready` is
the supervisor's view (every worker ready, not draining). The supervisor's registry
(`workers_registry`) adds its own `process_*` and, labelled by worker index (at most
`trelay.config.settings.MAX_WORKERS` series each):

    trelay_worker_up{worker}                      gauge    1 running and ready, else 0
    trelay_worker_allocations_active{worker}      gauge
    trelay_worker_cpu_seconds_total{worker}       counter  user + system, all incarnations
    trelay_worker_resident_memory_bytes{worker}   gauge
    trelay_worker_restarts_total{worker}          counter
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from trelay.config.revocations import FILE, FLEET, Revocations
from trelay.fleet.directory import NodeDirectory
from trelay.node.turn_node import TurnNode
from trelay.stun.codes import Method
from trelay.turn.stats import LATENCY_BUCKETS, OTHER_METHOD, Drop

Series = dict[tuple[str, ...], float]
# method label -> (per-bucket counts, not cumulative, the last one +Inf; sum of seconds)
Latency = dict[str, tuple[tuple[int, ...], float]]

_DIRECTIONS = ("client_to_peer", "peer_to_client")
# The drop reason of datagrams the kernel dropped: a socket's receive buffer was full
# (`trelay.node.datagram_batch.kernel_drops`); not a `Drop`, the core never sees them.
SOCKET_BUFFER = "socket_buffer"
# trelay_worker_handovers_total's kinds (design §4, steering across workers; all 0 in a
# single process): a stream connection (an RFC 6062 ConnectionBind's, or a reservation
# Allocate's over TCP/TLS) proxied to the worker it names, or adopted from another
# (`trelay.node.bind_proxy`); a UDP request (RFC 8016 Refresh, reservation Allocate)
# handed to the worker it names, and a client captured by the owner
# (`trelay.node.mobility_steering`). Summed over a node's workers, proxied connections
# equal adopted ones once the handoffs are taken.
HANDOVER_KINDS = ("connection_proxied", "connection_adopted", "request_handed_over",
                  "client_captured")  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Every metric's value at one moment, as label values -> number."""

    allocations_active: Series = field(default_factory=dict)
    allocations_created: Series = field(default_factory=dict)
    allocations_ended: Series = field(default_factory=dict)
    allocations_moved: Series = field(default_factory=dict)
    permissions_active: Series = field(default_factory=dict)
    channels_active: Series = field(default_factory=dict)
    relayed_datagrams: Series = field(default_factory=dict)
    relayed_bytes: Series = field(default_factory=dict)
    dropped: Series = field(default_factory=dict)
    requests: Series = field(default_factory=dict)
    auth_challenges: Series = field(default_factory=dict)
    auth_failures: Series = field(default_factory=dict)
    quota_rejections: Series = field(default_factory=dict)
    relay_ports: Series = field(default_factory=dict)
    draining: Series = field(default_factory=dict)
    tls_handshake_failures: Series = field(default_factory=dict)
    resource_exhaustion: Series = field(default_factory=dict)
    gso_sends: Series = field(default_factory=dict)
    gso_datagrams: Series = field(default_factory=dict)
    gso_fallbacks: Series = field(default_factory=dict)
    redirecting: Series = field(default_factory=dict)
    usage_records: Series = field(default_factory=dict)
    usage_queue: Series = field(default_factory=dict)
    worker_handovers: Series = field(default_factory=dict)
    latency: Latency = field(default_factory=dict)


def method_label(method: int) -> str:
    if method == OTHER_METHOD:
        return "other"
    try:
        return Method(method).name.lower()
    except ValueError:
        return "other"


def snapshot(node: TurnNode) -> NodeSnapshot:
    """Read the node's counters and tables now (in the node's trio thread)."""
    server, stats = node.server, node.server.stats
    usage = node.usage.counts
    active: Series = {}
    for transport, created in stats.allocations_created.items():
        ended = sum(n for (t, _), n in stats.allocations_ended.items() if t is transport)
        active[(transport.value,)] = created - ended
    allocations = list(server.allocations.values())
    datagrams: Series = {}
    sizes: Series = {}
    for transport, counters in node.counters.by_transport.items():
        for direction in _DIRECTIONS:
            key = (direction, transport.value)
            datagrams[key] = getattr(counters, f"{direction}_datagrams")
            sizes[key] = getattr(counters, f"{direction}_bytes")
    ports: Series = {}
    if server.ports is not None:
        in_use = server.ports.in_use
        ports = {("free",): server.ports.size - in_use, ("in_use",): in_use}
    return NodeSnapshot(
        allocations_active=active,
        allocations_created={(t.value,): n for t, n in stats.allocations_created.items()},
        allocations_ended={(t.value, r.value): n for (t, r), n in stats.allocations_ended.items()},
        allocations_moved={(t.value,): n for t, n in stats.allocations_moved.items()},
        permissions_active={(): sum(len(a.permissions) for a in allocations)},
        channels_active={(): sum(len(a.channels) for a in allocations)},
        relayed_datagrams=datagrams,
        relayed_bytes=sizes,
        dropped=_drops(stats.dropped, node.counters.dropped, node.kernel_drops()),
        requests={(method_label(m), str(c)): n for (m, c), n in stats.responses.items()},
        auth_challenges={(): stats.challenges},
        auth_failures={(r.value,): n for r, n in stats.failed_authentications().items()},
        quota_rejections={(q.value,): n for q, n in stats.quota_rejections.items()},
        relay_ports=ports,
        draining={(): 1.0 if server.draining else 0.0},
        tls_handshake_failures={(): node.tls_handshake_failures.count},
        resource_exhaustion={key: float(n) for key, n in node.exhaustion.counts.items()},
        gso_sends={(): node.counters.gso.runs},
        gso_datagrams={(): node.counters.gso.segments},
        gso_fallbacks={(): node.counters.gso.fallbacks},
        redirecting={(): 1.0 if server.redirection.fleet else 0.0},
        usage_records={("log",): usage.to_log, ("stream",): usage.to_stream},
        usage_queue={(): usage.queued},
        worker_handovers=_handovers(node),
        latency={
            method_label(m): (tuple(h.buckets), h.total_seconds) for m, h in stats.latency.items()
        },
    )


def _handovers(node: TurnNode) -> Series:
    """Each of `HANDOVER_KINDS`, 0 without workers."""
    proxy, steering = node.bind_proxy, node.steering
    counts = (
        0 if proxy is None else proxy.proxied,
        0 if proxy is None else proxy.adopted,
        0 if steering is None else steering.counts.handed_over,
        0 if steering is None else steering.counts.captured,
    )
    return {(kind,): float(n) for kind, n in zip(HANDOVER_KINDS, counts, strict=True)}


def _drops(core: dict[Drop, int], data_path: dict[Drop, int], kernel: int) -> Series:
    """Every reason, the core's drops and the data path's added (one vocabulary), and
    `SOCKET_BUFFER`: what the kernel dropped before the node could read it."""
    series: Series = {
        (reason.value,): core.get(reason, 0) + data_path.get(reason, 0) for reason in Drop
    }
    series[(SOCKET_BUFFER,)] = kernel
    return series


def combine(snapshots: Iterable[NodeSnapshot]) -> NodeSnapshot:
    """The sum of several workers' snapshots (every metric here is additive)."""
    series: dict[str, Series] = {name: {} for name, *_ in _FAMILIES}
    latency: Latency = {}
    for one in snapshots:
        for name, merged in series.items():
            for key, value in getattr(one, name).items():
                if name in _ANY_FIELDS:
                    merged[key] = max(merged.get(key, 0), value)
                else:
                    merged[key] = merged.get(key, 0) + value
        for method, (counts, seconds) in one.latency.items():
            old_counts, old_seconds = latency.get(method, ((0,) * len(counts), 0.0))
            summed = tuple(a + b for a, b in zip(old_counts, counts, strict=True))
            latency[method] = (summed, old_seconds + seconds)
    return NodeSnapshot(**series, latency=latency)


# Flags, not amounts: the node is draining when one of its workers is (the supervisor
# drains them all at once), and two draining workers are not "2"; it redirects when one
# of its workers does (each runs the overflow task on the same registry entry).
_ANY_FIELDS = frozenset({"draining", "redirecting"})

_Kind = type[CounterMetricFamily] | type[GaugeMetricFamily]
_COUNTER, _GAUGE = CounterMetricFamily, GaugeMetricFamily
# (NodeSnapshot field, kind, metric name (counters get "_total"), help, labels)
_FAMILIES: tuple[tuple[str, _Kind, str, str, tuple[str, ...]], ...] = (
    ("allocations_active", _GAUGE, "trelay_allocations_active",
     "Allocations alive now, by client transport.", ("transport",)),
    ("allocations_created", _COUNTER, "trelay_allocations_created",
     "Allocations created, by client transport.", ("transport",)),
    ("allocations_ended", _COUNTER, "trelay_allocations_ended",
     "Allocations ended, by client transport and why.", ("transport", "reason")),
    ("allocations_moved", _COUNTER, "trelay_allocations_moved",
     "Allocations moved to their client's new address with a MOBILITY-TICKET (RFC 8016), "
     "by client transport.", ("transport",)),
    ("permissions_active", _GAUGE, "trelay_permissions_active",
     "Permissions installed now (RFC 8656 §9).", ()),
    ("channels_active", _GAUGE, "trelay_channels_active",
     "Channels bound now (RFC 8656 §11).", ()),
    ("relayed_datagrams", _COUNTER, "trelay_relayed_datagrams",
     "Datagrams relayed, by direction and client transport.", ("direction", "transport")),
    ("relayed_bytes", _COUNTER, "trelay_relayed_bytes",
     "Application payload bytes relayed, by direction and client transport.",
     ("direction", "transport")),
    ("dropped", _COUNTER, "trelay_dropped_datagrams",
     "Datagrams and indications not relayed, by reason.", ("reason",)),
    ("requests", _COUNTER, "trelay_requests",
     "STUN/TURN requests answered, by method and response code.", ("method", "code")),
    ("auth_challenges", _COUNTER, "trelay_auth_challenges",
     "401 challenges to requests without credentials: every client's first request, "
     "not a failure (RFC 8489 §9.2.4).", ()),
    ("auth_failures", _COUNTER, "trelay_auth_failures",
     "Requests that tried to authenticate and failed, by reason.", ("reason",)),
    ("quota_rejections", _COUNTER, "trelay_quota_rejections",
     "Allocate requests refused by a quota.", ("quota",)),
    ("relay_ports", _GAUGE, "trelay_relay_ports",
     "Relay ports of the configured range, free or in use (absent without a range).",
     ("state",)),
    ("draining", _GAUGE, "trelay_draining",
     "1 while the node drains (no new allocations, existing ones kept), else 0.", ()),
    ("tls_handshake_failures", _COUNTER, "trelay_tls_handshake_failures",
     "TLS and DTLS handshakes that failed on the TLS and DTLS listeners (scanners, "
     "untrusted certificates, plain TCP to the TLS port, DTLS 1.0, handshakes not "
     "finished within the idle timeout).", ()),
    ("resource_exhaustion", _COUNTER, "trelay_resource_exhaustion",
     "What was refused because the process ran out of a resource: descriptors "
     "(EMFILE/ENFILE) or socket memory; accept: a new TCP/TLS connection closed, "
     "relay_socket: an Allocate answered 508 (or tried on another port), channel_socket: "
     "a channel kept the relay socket, peer_connection: an RFC 6062 connection to or from "
     "a peer not made.", ("resource", "what")),
    ("gso_sends", _COUNTER, "trelay_gso_sends",
     "Runs of equal-size datagrams to one destination sent in one sendmsg with UDP "
     "segmentation offload (GSO).", ()),
    ("gso_datagrams", _COUNTER, "trelay_gso_datagrams",
     "Relayed datagrams that left in GSO sends (also counted in "
     "trelay_relayed_datagrams_total).", ()),
    ("gso_fallbacks", _COUNTER, "trelay_gso_fallbacks",
     "Sockets on which a GSO send failed (EIO: no checksum offload; EMSGSIZE, EINVAL): "
     "they send one datagram at a time from then on, nothing was lost.", ()),
    ("redirecting", _GAUGE, "trelay_fleet_redirecting",
     "1 while new Allocates are sent to other nodes of the fleet (300 Try Alternate: "
     "overloaded or draining), else 0.", ()),
    ("usage_records", _COUNTER, "trelay_usage_records",
     "Usage records written, by where they went: the fleet's Redis stream, or the log.",
     ("sink",)),
    ("usage_queue", _GAUGE, "trelay_usage_queue_records",
     "Usage records queued for the fleet's Redis stream now (bounded by [usage] "
     "queue_max_records; beyond it they go to the log).", ()),
    ("worker_handovers", _COUNTER, "trelay_worker_handovers",
     "With --workers: stream connections proxied to the worker their ConnectionBind or "
     "RESERVATION-TOKEN names (connection_proxied) or adopted from another "
     "(connection_adopted), UDP requests handed to the worker their MOBILITY-TICKET or "
     "RESERVATION-TOKEN names (request_handed_over), clients captured by that worker "
     "(client_captured).", ("kind",)),
)  # fmt: skip


class NodeCollector(Collector):
    """Publishes the sum of `source()`'s snapshots; `ready()` gives `trelay_ready`."""

    def __init__(
        self, source: Callable[[], Iterable[NodeSnapshot]], ready: Callable[[], bool]
    ) -> None:
        self.source = source
        self.ready = ready
        self.version = build_version()

    def collect(self) -> Iterator[Metric]:
        now = combine(self.source())
        for name, kind, metric, documentation, labels in _FAMILIES:
            series: Series = getattr(now, name)
            # Every family is served from the start (HELP and TYPE, even before its first
            # sample) so queries and dashboards resolve; the port-pool gauge only with a range.
            if series or metric != "trelay_relay_ports":
                yield _family(kind, metric, documentation, labels, series)
        yield _latency(now.latency)
        ready: Series = {(): 1.0 if self.ready() else 0.0}
        yield _family(_GAUGE, "trelay_ready", "1 when every listener is bound and the node "
                      "is not draining, else 0.", (), ready)  # fmt: skip
        build: Series = {(self.version, platform.python_version()): 1.0}
        yield _family(_GAUGE, "trelay_build_info", "The running trelay and Python versions.",
                      ("version", "python"), build)  # fmt: skip


def _family(
    kind: _Kind, name: str, documentation: str, labels: tuple[str, ...], series: Series
) -> Metric:
    family = kind(name, documentation, labels=list(labels))
    for key, value in sorted(series.items()):
        family.add_metric(list(key), value)
    return family


def _latency(latency: Latency) -> Metric:
    family = HistogramMetricFamily(
        "trelay_request_duration_seconds",
        "Time to handle one STUN/TURN request in the core (control path).",
        labels=["method"],
    )
    bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
    for method, (counts, seconds) in sorted(latency.items()):
        cumulative, running = [], 0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        family.add_metric([method], cumulative, sum_value=seconds)
    return family


_GAUGE_FIELDS = frozenset(name for name, kind, *_ in _FAMILIES if kind is _GAUGE)


def counters_only(one: NodeSnapshot) -> NodeSnapshot:
    """`one` without its gauges: what an ended worker still adds to the node's counters."""
    kept = {name: {} if name in _GAUGE_FIELDS else getattr(one, name) for name, *_ in _FAMILIES}
    return NodeSnapshot(**kept, latency=one.latency)


@dataclass(frozen=True, slots=True)
class WorkerUsage:
    """One worker process as the supervisor last heard of it (`trelay.process.workers`)."""

    index: int
    up: bool
    allocations_active: float = 0.0
    cpu_seconds: float = 0.0
    resident_bytes: int = 0
    restarts: int = 0


class WorkerCollector(Collector):
    """The per-worker families (`trelay_worker_*{worker}`) of `source()`'s workers."""

    def __init__(self, source: Callable[[], Iterable[WorkerUsage]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        workers = list(self.source())
        columns: tuple[tuple[_Kind, str, str, Callable[[WorkerUsage], float]], ...] = (
            (_GAUGE, "trelay_worker_up", "1 when the worker runs and is ready, else 0.",
             lambda w: 1.0 if w.up else 0.0),
            (_GAUGE, "trelay_worker_allocations_active", "Allocations alive now, by worker.",
             lambda w: w.allocations_active),
            (_COUNTER, "trelay_worker_cpu_seconds", "CPU seconds (user and system) used by "
             "the worker, over all its restarts.", lambda w: w.cpu_seconds),
            (_GAUGE, "trelay_worker_resident_memory_bytes", "Resident memory of the worker.",
             lambda w: float(w.resident_bytes)),
            (_COUNTER, "trelay_worker_restarts", "Times the worker was restarted after it "
             "died.", lambda w: float(w.restarts)),
        )  # fmt: skip
        for kind, name, documentation, read in columns:
            series: Series = {(str(w.index),): read(w) for w in workers}
            yield _family(kind, name, documentation, ("worker",), series)


def workers_registry(
    snapshots: Callable[[], Iterable[NodeSnapshot]],
    workers: Callable[[], Iterable[WorkerUsage]],
    *,
    ready: Callable[[], bool],
) -> CollectorRegistry:
    """The supervisor's registry: the workers' summed node metrics, the per-worker
    families, and the supervisor's own `process_*`."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(snapshots, ready))
    registry.register(WorkerCollector(workers))
    ProcessCollector(registry=registry)
    return registry


class FleetCollector(Collector):
    """`trelay_fleet_connected`: 1 while the fleet's Redis answers, else 0 (design §9)."""

    def __init__(self, connected: Callable[[], bool]) -> None:
        self.connected = connected

    def collect(self) -> Iterator[Metric]:
        value: Series = {(): 1.0 if self.connected() else 0.0}
        yield _family(_GAUGE, "trelay_fleet_connected", "1 while the fleet's Redis answers, "
                      "else 0 (only with [fleet]).", (), value)  # fmt: skip


class RevocationCollector(Collector):
    """`trelay_revocations{source}`: identities `revocations()` holds now, by source."""

    def __init__(self, revocations: Callable[[], Revocations | None]) -> None:
        self.revocations = revocations

    def collect(self) -> Iterator[Metric]:
        held = self.revocations()
        series: Series = {
            (source,): 0.0 if held is None else float(held.count(source))
            for source in (FILE, FLEET)
        }
        yield _family(_GAUGE, "trelay_revocations", "Identities revoked now, by source "
                      "(file: the revocations file and the token API's writes; fleet: Redis).",
                      ("source",), series)  # fmt: skip


class PlacementCollector(Collector):
    """`trelay_placement_fallbacks_total`: requests an API node in a fleet answered with
    its static ICE URIs, having no usable node listing (`NodeDirectory.fallbacks`)."""

    def __init__(self, directory: NodeDirectory) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        series: Series = {(): float(self.directory.fallbacks)}
        yield _family(_COUNTER, "trelay_placement_fallbacks", "ICE server requests answered "
                      "with the static ICE URIs: no node listing from Redis younger than the "
                      "registry's TTL.", (), series)  # fmt: skip


def build_version() -> str:
    try:
        return metadata.version("trelay")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


def node_registry(
    node: TurnNode, *, ready: Callable[[], bool], process: bool = True
) -> CollectorRegistry:
    """A registry of its own for `node`: its metrics, and the process's (`process_*`)."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(lambda: (snapshot(node),), ready))
    if process:
        ProcessCollector(registry=registry)
    return registry
