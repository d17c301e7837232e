#!/usr/bin/env python3
"""Requests per second the HTTP layer serves while SLOW slowloris connections are held open.

    scripts/http_slowloris.py http://127.0.0.1:8080 [SLOW=500] [SECONDS=10] [CLIENTS=8] [SLOW_FROM=127.0.0.2]

SLOW connections each send half a request line and then one header byte every second, forever;
when the server drops one (its header read timeout), it is opened again at once, so SLOW stay
open, all from the source address SLOW_FROM (another loopback address by default, so a server
run with --rate-limit-loopback true tells the attacker from the clients). Meanwhile CLIENTS
keep-alive clients (from 127.0.0.1) send `GET /healthz` back to back for SECONDS; the
script prints their requests per second and what happened to the slow connections. Run it with
SLOW=0 for the baseline: the ratio is the number (BENCHMARKS.md "Abuse"). Standard library only.
"""

import asyncio
import sys
import time
from urllib.parse import urlparse


async def slow_connection(host, port, source, stats, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            stats["refused"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["opened"] += 1
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            while not stop.is_set():
                await asyncio.sleep(1)
                writer.write(b"a")
                await writer.drain()
                if reader.at_eof():
                    break
        except OSError:
            pass
        stats["dropped"] += 1
        writer.close()


async def client(host, port, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0))
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    while time.monotonic() < deadline:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            counts["errors"] += 1
        counts["ok"] += 1
    writer.close()


async def main():
    url = urlparse(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
    slow = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    clients = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    source = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.2"
    host, port = url.hostname, url.port or 80
    stats = {"opened": 0, "dropped": 0, "refused": 0}
    stop = asyncio.Event()
    slow_tasks = [asyncio.create_task(slow_connection(host, port, source, stats, stop)) for _ in range(slow)]
    await asyncio.sleep(2 if slow else 0)
    counts = {"ok": 0, "errors": 0}
    start = time.monotonic()
    await asyncio.gather(*(client(host, port, start + seconds, counts) for _ in range(clients)))
    elapsed = time.monotonic() - start
    stop.set()
    for t in slow_tasks:
        t.cancel()
    print(
        f"slow={slow} clients={clients} seconds={elapsed:.1f} requests={counts['ok']} "
        f"rps={counts['ok'] / elapsed:.0f} errors={counts['errors']} "
        f"slow_opened={stats['opened']} slow_dropped={stats['dropped']} slow_refused={stats['refused']}"
    )


asyncio.run(main())
