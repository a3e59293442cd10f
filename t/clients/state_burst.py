#!/usr/bin/python3
"""A burst of joins into one room, for t/16_state_coalescing.t.

    state_burst.py URL_BASE ROOM N

URL_BASE is ws://host:port/ws.  An observer joins ROOM first, then N
clients join as fast as they connect (up to 50 handshakes at a time).
Every client reads all the time.  Once the observer saw a state listing
all N + 1 players and one second passed without a state, prints one
JSON object: the states the observer got after its own welcome, the
player count of its last state, the largest number of states any joiner
got, the joins that failed, and the seconds the burst took.
"""

import asyncio
import json
import sys
import time

import websockets

TIMEOUT = 30


async def reader(ws, stats):
    try:
        async for raw in ws:
            m = json.loads(raw)
            if m.get("type") == "state":
                stats["states"] += 1
                stats["last"] = len(m["data"]["players"])
                stats["at"] = time.monotonic()
    except websockets.ConnectionClosed:
        stats["closed"] = True


async def join(url, stats, sem):
    async with sem:
        ws = await websockets.connect(url, max_size=None, open_timeout=10)
    first = json.loads(await ws.recv())
    if first.get("type") != "welcome":
        raise RuntimeError("not a welcome: %r" % first)
    task = asyncio.create_task(reader(ws, stats))
    return ws, task


async def main():
    base, room, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    obs = {"states": 0, "last": 0, "at": 0.0}
    ows, otask = await join("%s?room=%s&name=observer" % (base, room), obs,
                            asyncio.Semaphore(1))
    t0 = time.monotonic()
    sem = asyncio.Semaphore(50)
    stats = [{"states": 0, "last": 0, "at": 0.0} for _ in range(n)]
    results = await asyncio.gather(
        *[join("%s?room=%s&name=p%d" % (base, room, i), stats[i], sem)
          for i in range(n)],
        return_exceptions=True)
    joined = time.monotonic() - t0
    failed = sum(1 for r in results if isinstance(r, BaseException))

    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        quiet = time.monotonic() - max(obs["at"], t0)
        if obs["last"] == n + 1 - failed and quiet > 1.0:
            break
        await asyncio.sleep(0.05)

    print(json.dumps({
        "observer_states": obs["states"],
        "observer_last_players": obs["last"],
        "max_joiner_states": max(s["states"] for s in stats),
        "failed": failed,
        "closed": sum(1 for s in stats if s.get("closed")),
        "join_seconds": round(joined, 3),
        "settle_seconds": round(obs["at"] - t0, 3),
    }))
    for r in results:
        if not isinstance(r, BaseException):
            await r[0].close()
    await ows.close()


asyncio.run(main())
