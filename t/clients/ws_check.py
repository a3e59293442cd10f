#!/usr/bin/python3
"""Cross-check of ngx_rooms with the Python `websockets` client library.

    ws_check.py URL LIMIT SIZE...

URL is the endpoint with room and name (ws:// or wss://, the certificate
is not verified).  For every SIZE the client sends one text message of
exactly SIZE bytes: a chat envelope padded to that size, or (below the
smallest envelope) a text that is not JSON.  It expects the chat relayed
back whole, or an error envelope "bad_envelope".  A message of LIMIT + 1
bytes on a second connection must be closed with 1009.  Both clients end
with a clean close (1000 both ways).  Prints one TAP line ("ok" / "not ok")
per check; the exit status is 1 if any failed.
"""

import asyncio
import json
import ssl
import sys

import websockets

EMPTY = '{"type":"chat","data":{"text":""}}'
TIMEOUT = 5

failed = 0


def check(cond, what):
    global failed
    print(('ok - ' if cond else 'not ok - ') + what, flush=True)
    if not cond:
        failed = 1


def message_of(size):
    """A text of exactly size bytes (UTF-8) and the chat text inside it."""
    if size < len(EMPTY):
        return 'x' * size, None
    pad = size - len(EMPTY)
    text = ''
    if pad >= 5:
        text = 'é✓'       # 2 + 3 bytes
        pad -= 5
    text += 'a' * pad
    raw = json.dumps({'type': 'chat', 'data': {'text': text}},
                     ensure_ascii=False, separators=(',', ':'))
    assert len(raw.encode()) == size, (size, len(raw.encode()))
    return raw, text


async def next_of(ws, types):
    while True:
        raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
        msg = json.loads(raw)
        if msg.get('type') in types:
            return msg


def connect(url):
    ctx = None
    if url.startswith('wss:'):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return websockets.connect(url, ssl=ctx, max_size=None, compression=None,
                              open_timeout=TIMEOUT, close_timeout=TIMEOUT)


async def main(url, limit, sizes):
    async with connect(url) as ws:
        welcome = await next_of(ws, ('welcome',))
        check(welcome['type'] == 'welcome', 'python: welcome')

        for size in sizes:
            raw, text = message_of(size)
            await ws.send(raw)
            if text is None:
                msg = await next_of(ws, ('error',))
                check(msg['data'].get('code') == 'bad_envelope',
                      f'python: {size} B not-JSON message: bad_envelope')
            else:
                msg = await next_of(ws, ('chat',))
                check(msg['data'].get('text') == text,
                      f'python: {size} B message relayed whole')

        await ws.close(1000)
        check(ws.close_code == 1000,
              f'python: clean close, server answered {ws.close_code}')

    async with connect(url) as ws:
        welcome = await next_of(ws, ('welcome',))
        raw, _ = message_of(limit + 1)
        await ws.send(raw)
        try:
            # the backfill of the first connection's messages comes first
            while True:
                msg = await next_of(ws, ('chat',))
                if msg.get('id', 0) > welcome['data']['last_id']:
                    break
            check(False, f'python: {limit + 1} B message refused')
        except websockets.ConnectionClosed:
            check(ws.close_code == 1009,
                  f'python: {limit + 1} B message: close 1009 '
                  f'(got {ws.close_code})')


if __name__ == '__main__':
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2]),
                         [int(s) for s in sys.argv[3:]]))
    except Exception as e:          # any failure is a failed check
        check(False, f'python: {type(e).__name__}: {e}')
    sys.exit(failed)
