#!/usr/bin/env python3
"""Idle-connection load for the memory benchmark.

  idle_conns.py server PORT          accept and hold connections on 127.0.0.1:PORT
  idle_conns.py client PORT N        open N connections to PORT, send one byte each, hold
  idle_conns.py http PORT N          open N HTTP/1.1 keep-alive connections to PORT, make one
                                     request on each (reading the whole answer), hold
  idle_conns.py https PORT N         the same over TLS (certificate not verified)
  idle_conns.py h2c PORT N           the same over HTTP/2 with prior knowledge (one stream each)

Both print `ready N` on stdout once N connections are held (the server prints its count every
time it grows by 1000) and then sleep until killed.
"""
import asyncio
import sys


async def server(port):
    held = []
    count = 0

    async def on_conn(reader, writer):
        nonlocal count
        held.append(writer)
        count += 1
        if count % 1000 == 0:
            print(f"held {count}", flush=True)
        await reader.read(1)
        await asyncio.Event().wait()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    async with srv:
        await srv.serve_forever()


async def hold(n, open_one):
    """Opens n connections with `open_one` (each tried up to 50 times), prints `ready N` and
    holds them until killed."""
    conns = []
    for i in range(n):
        for attempt in range(50):
            try:
                conns.append(await open_one())
                break
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.01)
        if i % 500 == 0:
            await asyncio.sleep(0)
    print(f"ready {len(conns)}", flush=True)
    await asyncio.Event().wait()


async def client(port, n):
    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"x")
        return r, w

    await hold(n, one)


async def http_client(port, n, tls=False):
    import ssl
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def one():
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if tls else None
        )
        w.write(request)
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await r.readexactly(length)
        return r, w

    await hold(n, one)


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


async def h2c_client(port, n):
    """HTTP/2 with prior knowledge: preface, SETTINGS, one GET (static-table HPACK), read frames
    until stream 1 ends, acknowledging the server's SETTINGS; then hold."""
    headers = bytes([0x82, 0x86, 0x84, 0x41, 5]) + b"bench"  # GET http / :authority bench
    hello = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(4, 0, 0)
        + frame(1, 0x5, 1, headers)  # HEADERS, END_STREAM | END_HEADERS
    )

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(hello)
        done = False
        while not done:
            head = await r.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            await r.readexactly(length)
            if kind == 4 and not flags & 1:
                w.write(frame(4, 1, 0))  # SETTINGS ACK
            if stream == 1 and kind in (0, 1) and flags & 1:
                done = True
        return r, w

    await hold(n, one)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2])))
    elif sys.argv[1] == "http":
        asyncio.run(http_client(int(sys.argv[2]), int(sys.argv[3])))
    elif sys.argv[1] == "https":
        asyncio.run(http_client(int(sys.argv[2]), int(sys.argv[3]), tls=True))
    elif sys.argv[1] == "h2c":
        asyncio.run(h2c_client(int(sys.argv[2]), int(sys.argv[3])))
    else:
        asyncio.run(client(int(sys.argv[2]), int(sys.argv[3])))
