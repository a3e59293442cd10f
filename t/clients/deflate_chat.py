#!/usr/bin/python3
"""A chat participant with permessage-deflate, for t/45_deflate.t.

    deflate_chat.py URL TEXTS_JSON TOTAL

Connects with the Python `websockets` client library, compression on
(its default: it offers permessage-deflate and compresses every message
it sends), waits for the welcome and prints one JSON line:
{"ready": 1, "extensions": <Sec-WebSocket-Extensions of the answer, or
"">}.  Then waits for a line on stdin, sends every text of the file
TEXTS_JSON (a JSON list) as a chat, and reads chats until TOTAL live
ones (newer than the welcome) have come, from anyone; prints
{"chats": [[name, text], ...]} and closes with 1000, printing
{"close": code}.  Any failure prints {"error": "..."}; every wait is
bounded.
"""

import asyncio
import json
import sys

import websockets

TIMEOUT = 20


def say(obj):
    print(json.dumps(obj), flush=True)


async def main(url, texts, total):
    async with websockets.connect(url, max_size=None,
                                  open_timeout=TIMEOUT,
                                  close_timeout=TIMEOUT) as ws:
        welcome = None
        while welcome is None:
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if msg.get('type') == 'welcome':
                welcome = msg
        last_id = welcome['data'].get('last_id', 0)

        say({'ready': 1,
             'extensions': ws.response_headers.get(
                 'Sec-WebSocket-Extensions', '')})

        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(
            loop.run_in_executor(None, sys.stdin.readline), TIMEOUT)
        if not line:
            say({'error': 'stdin closed before go'})
            return

        for text in texts:
            await ws.send(json.dumps({'type': 'chat', 'data': {'text': text}},
                                     ensure_ascii=False))

        chats = []
        while len(chats) < total:
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if msg.get('type') == 'chat' and msg.get('id', 0) > last_id:
                data = msg['data']
                chats.append([data.get('from'), data.get('text')])

        say({'chats': chats})
        await ws.close(1000)
        say({'close': ws.close_code})


if __name__ == '__main__':
    try:
        with open(sys.argv[2], encoding='utf-8') as f:
            texts = json.load(f)
        asyncio.run(main(sys.argv[1], texts, int(sys.argv[3])))
    except Exception as e:          # reported, the test fails on it
        say({'error': f'{type(e).__name__}: {e}'})
        sys.exit(1)
