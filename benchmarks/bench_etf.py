"""Throughput of beamlet's ETF codec, with pickle in the same run as an anchor.

Run: PYTHONPATH=src python3 benchmarks/bench_etf.py [--seconds 0.5]

For each representative term it prints encode and decode MB/s (MB of ETF
bytes produced or consumed per second, 1 MB = 10**6 bytes) and the same for
pickle (protocol 5) on the same Python value.  Every message between nodes
crosses this codec twice, so these are the numbers to watch.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

from beamlet.distribution.etf import ETFContext, decode, encode
from beamlet.terms import Atom, Pid

CTX = ETFContext(Atom("bench@127.0.0.1"), 1)


def _terms() -> dict[str, Any]:
    pid = Pid(123, 0)
    small = (Atom("$gen_call"), (pid, [Atom("alias"), 17]), (Atom("get"), Atom("key"), 42))
    nested: dict[Any, Any] = {
        Atom(f"k{i}"): {
            Atom("id"): i,
            Atom("name"): f"name-{i}".encode(),
            Atom("tags"): [Atom("a"), Atom("b")],
            Atom("score"): i * 1.5,
            Atom("child"): {Atom("x"): i, Atom("y"): [i, i + 1000]},
        }
        for i in range(200)
    }
    return {
        "small tuple (gen_call)": small,
        "1 MB binary": bytes(range(256)) * 4096,
        "10k small ints (>255)": list(range(1000, 11000)),
        "10k bytes as list (STRING_EXT)": [i % 256 for i in range(10000)],
        "nested maps (200 x 5 keys)": nested,
    }


def _rate(fn: Callable[[], object], nbytes: int, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    return nbytes * n / (now - start) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = ap.parse_args()
    print(
        f"python {sys.version.split()[0]}; MB/s of encoded bytes (10**6 B/s), "
        "us per call; pickle (protocol 5) MB/s of its own bytes"
    )
    head = (
        f"{'term':32} {'bytes':>8} {'enc MB/s':>9} {'dec MB/s':>9} {'enc us':>8} {'dec us':>8}"
        f" | {'pickle B':>8} {'p.enc':>8} {'p.dec':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, term in _terms().items():
        data = encode(term, CTX)
        assert decode(data, CTX) is not None
        pdata = pickle.dumps(term, protocol=5)
        enc = _rate(lambda t=term: encode(t, CTX), len(data), args.seconds)
        dec = _rate(lambda d=data: decode(d, CTX), len(data), args.seconds)
        penc = _rate(lambda t=term: pickle.dumps(t, protocol=5), len(pdata), args.seconds)
        pdec = _rate(lambda d=pdata: pickle.loads(d), len(pdata), args.seconds)
        print(
            f"{name:32} {len(data):8d} {enc:9.1f} {dec:9.1f} "
            f"{len(data) / enc:8.1f} {len(data) / dec:8.1f} | "
            f"{len(pdata):8d} {penc:8.1f} {pdec:8.1f}"
        )


if __name__ == "__main__":
    main()
