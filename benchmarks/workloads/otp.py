"""OTP behaviours: a GenServer call round trip (one scheduler) next to Pykka's
ask and Erlang's gen_server:call; a one_for_one supervisor restarting N
crashing children (restarts per second)."""

from __future__ import annotations

import time


def beamlet(n: int) -> dict[str, float]:
    import beamlet as b
    from beamlet.otp import GenServer, call

    class Echo(GenServer):
        async def handle_call(self, request, from_):  # type: ignore[no-untyped-def]
            return request

    async def main() -> dict[str, float]:
        pid = await Echo.start_link()
        for i in range(1000):
            await call(pid, i)
        t0 = time.perf_counter()
        for i in range(n):
            await call(pid, i)
        return {"us_per_call": (time.perf_counter() - t0) / n * 1e6}

    return b.run(main, schedulers=1)


def pykka(n: int) -> dict[str, float]:
    import pykka as pk

    class Echo(pk.ThreadingActor):
        def on_receive(self, message):  # type: ignore[no-untyped-def]
            return message

    ref = Echo.start()
    for i in range(1000):
        ref.ask(i)
    t0 = time.perf_counter()
    for i in range(n):
        ref.ask(i)
    dt = time.perf_counter() - t0
    ref.stop()
    return {"us_per_call": dt / n * 1e6}


def beamlet_restarts(n: int) -> dict[str, float]:
    import beamlet as b
    from beamlet.otp import GenServer, Supervisor

    class Crasher(GenServer):
        async def init(self, i):  # type: ignore[no-untyped-def]
            b.send("bench", ("up", i))

        async def handle_cast(self, request):  # type: ignore[no-untyped-def]
            raise RuntimeError("crash")

    async def main() -> dict[str, float]:
        import logging

        from beamlet.otp import cast, which_children

        logging.disable(logging.CRITICAL)  # n crash reports are not the point
        b.register("bench", b.self())
        children = [{"id": i, "start": (Crasher.start_link, (i,))} for i in range(n)]
        sup = await Supervisor.start_link(children, intensity=10 * n, period=60)
        for _ in range(n):
            await b.receive(("up", b.ANY))
        pids = [pid for _, pid, _ in await which_children(sup)]
        t0 = time.perf_counter()
        for pid in pids:
            cast(pid, "crash")
        for _ in range(n):
            await b.receive(("up", b.ANY))
        return {"restarts_per_s": n / (time.perf_counter() - t0)}

    return b.run(main, schedulers=1)
