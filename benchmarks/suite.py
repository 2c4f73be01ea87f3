"""The workloads of the suite: sizes, metrics, targets, and how each runtime runs them."""

from __future__ import annotations

from dataclasses import dataclass, field

LOWER = "lower"
HIGHER = "higher"


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    better: str = LOWER
    target: float | None = None  # beamlet's target from the issues, if any


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    args: tuple[int, ...]  # full size
    quick: tuple[int, ...]  # --quick size
    metrics: tuple[Metric, ...]
    runtimes: tuple[str, ...] = ("beamlet", "asyncio", "gevent", "erlang")
    # Python function per runtime when it differs from the runtime's name
    functions: dict[str, str] = field(default_factory=dict)
    erlang_flags: tuple[str, ...] = ()
    # also run Erlang with one scheduler (+S 1), as a second column
    erlang_single: bool = False
    timeout: float = 300.0
    group: str = "kernel"
    # file descriptors the workload needs (the harness raises erl's RLIMIT_NOFILE)
    fds: int = 0


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "spawn",
        "spawn 1M processes blocked in receive",
        (1_000_000,),
        (20_000,),
        (
            Metric("us_per_spawn", "µs", target=3.0),
            Metric("bytes_per_proc", "B", target=1200.0),
        ),
        erlang_flags=("+P", "2000000"),
    ),
    Workload(
        "ring",
        "ring of 10k processes x 100 rounds",
        (10_000, 100),
        (1_000, 10),
        (Metric("us_per_hop", "µs", target=0.8),),
    ),
    Workload(
        "pingpong",
        "ping-pong round trips",
        (200_000,),
        (10_000,),
        (Metric("us_per_roundtrip", "µs", target=1.5),),
    ),
    Workload(
        "fanin",
        "fan-in 1000 senders x 1000 messages → 1",
        (1000, 1000),
        (100, 100),
        (Metric("msgs_per_s", "msg/s", HIGHER, target=3_000_000),),
    ),
    Workload(
        "selective",
        "call with 10k unrelated messages queued",
        (10_000, 20_000),
        (10_000, 1_000),
        (Metric("us_per_call", "µs", target=5.0),),
    ),
    Workload(
        "skynet",
        "skynet 1M",
        (1_000_000,),
        (10_000,),
        (Metric("seconds", "s", target=3.0),),
        erlang_flags=("+P", "2000000"),
    ),
    Workload(
        "copy",
        "cost of making a message private to the receiver",
        (),
        (),
        tuple(
            Metric(f"{shape}_ns", "ns")
            for shape in ("int", "tuple3", "bytes_1MB", "list100", "dict10", "dataclass")
        ),
        runtimes=("beamlet", "deepcopy", "pickle"),
        functions={"pickle": "pickle_rt"},
    ),
    Workload(
        "ring_sysmon",
        "ring 10k x 30 without sysmon (its overhead: compare with `ring`)",
        (10_000, 30),
        (1_000, 10),
        (Metric("us_per_hop", "µs"),),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_no_sysmon"},
        group="preemption",
    ),
    Workload(
        "lateness_0",
        "1 ms pinger lateness, no runaway",
        (0, 3000),
        (0, 300),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms")),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "lateness_1",
        "1 ms pinger lateness, 1 busy runaway",
        (1, 3000),
        (1, 300),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=3.0), Metric("p99_all_ms", "ms")),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "lateness_16",
        "1 ms pinger lateness, 16 busy runaways",
        (16, 3000),
        (16, 300),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=20.0), Metric("p99_all_ms", "ms")),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "lateness_16_sleepers",
        "1 ms pinger lateness, 16 processes blocked in time.sleep",
        (16, 3000),
        (16, 300),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=1.0)),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_sleepers"},
        group="preemption",
    ),
    Workload(
        "lateness_1000",
        "1 ms pinger lateness, 1,000 busy runaways",
        (1000, 3000),
        (200, 300),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=20.0), Metric("p99_all_ms", "ms")),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "kill_0",
        "kill a running busy process (idle system)",
        (0, 200),
        (0, 20),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=1.0)),
        runtimes=("beamlet", "erlang"),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "kill_4",
        "kill a running busy process, 4 other runaways",
        (4, 200),
        (4, 20),
        (Metric("p50_ms", "ms"), Metric("p99_ms", "ms", target=20.0)),
        runtimes=("beamlet", "erlang"),
        erlang_single=True,
        group="preemption",
    ),
    Workload(
        "kill_1000",
        "kill 1,000 busy runaways at once, each running on its own thread",
        (1000, 1),
        (200, 1),
        (Metric("all_dead_s", "s", target=1.0), Metric("held_by_runaways", "threads", HIGHER)),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_many"},
        group="preemption",
    ),
    Workload(
        "kill_1000_spawned",
        "spawn 1,000 busy runaways and kill them at once, never yielding; 10 rounds",
        (1000, 10),
        (200, 2),
        (Metric("p50_s", "s"), Metric("worst_s", "s")),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_spree"},
        group="preemption",
    ),
    Workload(
        "timers",
        "200,000 send_after timers of an hour to one process",
        (200_000,),
        (20_000,),
        (
            Metric("bytes_per_timer", "B", target=200.0),
            Metric("kernel_bytes_per_timer", "B", target=200.0),
            Metric("held_after_exit_B", "B"),
            Metric("us_per_set_and_cancel", "µs"),
        ),
        runtimes=("beamlet", "erlang"),
    ),
)


WORKLOADS += (
    Workload(
        "gen_call",
        "GenServer call round trip, one scheduler",
        (100_000,),
        (5_000,),
        (Metric("us_per_call", "µs", target=5.0),),
        runtimes=("beamlet", "pykka", "erlang"),
        group="otp",
    ),
    Workload(
        "restarts",
        "one_for_one supervisor restarting 10,000 crashing children",
        (10_000,),
        (500,),
        (Metric("restarts_per_s", "restarts/s", HIGHER),),
        runtimes=("beamlet", "erlang"),
        functions={"beamlet": "beamlet_restarts"},
        group="otp",
    ),
)


WORKLOADS += (
    Workload(
        "cpu_bound",
        "1,000 processes each summing range(20,000), at once",
        (1_000, 20_000),
        (100, 2_000),
        (Metric("seconds", "s"), Metric("threads_seconds", "s")),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_cpu"},
        group="parallel",
    ),
    Workload(
        "pairs",
        "1,000 ping-pong pairs x 200 round trips, at once",
        (1_000, 200),
        (100, 20),
        (Metric("roundtrips_per_s", "round trips/s", HIGHER),),
        runtimes=("beamlet",),
        functions={"beamlet": "beamlet_pairs"},
        group="parallel",
    ),
)


NET = ("beamlet", "asyncio", "uvloop", "erlang")

WORKLOADS += (
    Workload(
        "echo_rtt",
        "TCP echo round trip over loopback, 64-byte messages, 1 connection",
        (0, 20_000, 10_000),
        (0, 2_000, 3_000),
        (Metric("p50_us", "µs", target=20.0), Metric("p99_us", "µs", target=100.0)),
        runtimes=NET,
        timeout=120.0,
        group="net",
    ),
    Workload(
        "echo_rtt_runaway_1",
        "TCP echo round trip, 64 bytes, while 1 busy runaway spins",
        (1, 5_000, 5_000),
        (1, 500, 2_000),
        (
            Metric("p50_us", "µs"),
            Metric("p99_us", "µs", target=1_000.0),
            Metric("p99_all_us", "µs"),
        ),
        runtimes=NET,
        timeout=120.0,
        group="net",
    ),
    Workload(
        "echo_rtt_runaway_16",
        "TCP echo round trip, 64 bytes, while 16 busy runaways spin",
        (16, 2_000, 5_000),
        (16, 300, 2_000),
        (
            Metric("p50_us", "µs"),
            Metric("p99_us", "µs", target=20_000.0),
            Metric("p99_all_us", "µs"),
        ),
        runtimes=NET,
        timeout=120.0,
        group="net",
    ),
    Workload(
        "echo_64",
        "64 TCP connections each echoing 64-byte messages one at a time",
        (64, 1_000),
        (64, 50),
        (Metric("msgs_per_s", "msg/s", HIGHER),),
        runtimes=NET,
        timeout=120.0,
        group="net",
    ),
    Workload(
        "idle_conns",
        # 9,900, not the 10,000: both ends live in the one OS process
        # (2 descriptors a connection), and the hard RLIMIT_NOFILE of the
        # machines here is 20,000.
        "9,900 idle TCP connections (both ends in one OS process)",
        (9_900, 10),
        (1_000, 10),
        (Metric("bytes_per_conn", "B", target=3_000.0), Metric("us_per_conn", "µs")),
        runtimes=NET,
        timeout=120.0,
        group="net",
        fds=2 * 9_900 + 200,
    ),
    Workload(
        "accept_rate",
        "TCP connections accepted per second: 4 connect+close loops, 10 acceptors",
        (20_000, 4, 10),
        (2_000, 4, 10),
        (Metric("accepts_per_s", "/s", HIGHER, target=20_000.0),),
        runtimes=NET,
        timeout=120.0,
        group="net",
        fds=4096,
    ),
)


def module_of(w: Workload) -> str:
    """The module implementing a workload (lateness_16 -> lateness)."""
    if w.name in ("gen_call", "restarts"):
        return "otp"
    if w.name in ("cpu_bound", "pairs"):
        return "parallel"
    for base in ("lateness", "kill", "ring", "echo_rtt", "http_hello"):
        if w.name.startswith(base):
            return base
    return w.name


def erlang_workload(w: Workload) -> str:
    return w.name if w.group == "otp" else module_of(w)


WORKLOADS += (
    Workload(
        "aio_bridge",
        "asyncio bridge: aio.run round trip; 64 processes through it; aio.call from asyncio",
        (20_000, 1_000, 20_000),
        (2_000, 100, 2_000),
        (
            Metric("run_us", "µs", target=60.0),
            Metric("run_64_per_s", "/s", HIGHER, target=20_000.0),
            Metric("call_us", "µs", target=60.0),
            Metric("blocking_us", "µs"),
            Metric("hop_pair_us", "µs"),
        ),
        runtimes=("beamlet", "asyncio"),
        functions={"asyncio": "asyncio_"},
        timeout=120.0,
        group="aio",
    ),
)


# beamlet.http under wrk (the server on one core); the "asyncio" column is
# uvicorn on the same app. Needs wrk (apt-get install wrk).
_HTTP_METRICS = (
    Metric("h11_rps", "req/s", HIGHER),
    Metric("h11_p99_ms", "ms"),
    Metric("httptools_rps", "req/s", HIGHER),
    Metric("httptools_p99_ms", "ms"),
)
WORKLOADS += (
    Workload(
        "http_hello",
        "HTTP hello world, wrk -c64, server on one core (asyncio column: uvicorn)",
        (4, 64, 0),
        (1, 16, 0),
        _HTTP_METRICS,
        runtimes=("beamlet", "asyncio"),
        functions={"asyncio": "asyncio_"},
        timeout=120.0,
        group="http",
    ),
    Workload(
        "http_hello_runaway_4",
        "the same with 4 runaway loops in the server (uvicorn: 4 spinning threads)",
        (4, 64, 4),
        (1, 16, 4),
        _HTTP_METRICS,
        runtimes=("beamlet", "asyncio"),
        functions={"asyncio": "asyncio_"},
        timeout=120.0,
        group="http",
    ),
)
