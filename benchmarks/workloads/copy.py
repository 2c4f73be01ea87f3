"""What message isolation costs: ns to prepare a message for another process
(beamlet's copy_message) for a few shapes, next to copy.deepcopy and a pickle
round trip as anchors. Immutable values are shared, so they cost a type check."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import timeit
from typing import Any


@dataclasses.dataclass
class Order:
    id: int
    items: list[str]
    meta: dict[str, Any]


SHAPES: dict[str, Any] = {
    "int": 42,
    "tuple3": ("ok", 12, b"abc"),
    "bytes_1MB": b"x" * 1_000_000,
    "list100": list(range(100)),
    "dict10": {f"k{i}": i for i in range(10)},
    "dataclass": Order(1, ["a", "b"], {"x": 1}),
}


def _ns(fn: Any, value: Any, number: int = 20_000) -> float:
    return timeit.timeit(lambda: fn(value), number=number) / number * 1e9


def beamlet() -> dict[str, float]:
    from beamlet._kernel.copying import copy_message

    out = {}
    for name, value in SHAPES.items():
        out[f"{name}_ns"] = _ns(copy_message, value)
    return out


def deepcopy() -> dict[str, float]:
    return {f"{name}_ns": _ns(copy.deepcopy, value) for name, value in SHAPES.items()}


def pickle_rt() -> dict[str, float]:
    def rt(v: Any) -> Any:
        return pickle.loads(pickle.dumps(v))

    return {f"{name}_ns": _ns(rt, value) for name, value in SHAPES.items()}
