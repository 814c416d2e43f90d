#!/usr/bin/env python3
"""slow_backend.py PORT DELAY_MS - a keep-alive HTTP/1.1 backend that answers
every request with a small JSON body after DELAY_MS (asyncio, one thread).
Used by the aggregation benchmark until kiban-hello takes a delay option."""
import asyncio
import json
import sys

PORT, DELAY = int(sys.argv[1]), int(sys.argv[2]) / 1000.0


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(DELAY)
            body = json.dumps({"port": PORT, "delay_ms": DELAY * 1000}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
