'use strict';

// A chat participant with permessage-deflate, for t/45_deflate.t.
//
//     node deflate_chat.js URL TEXTS_JSON TOTAL
//
// Same protocol as t/clients/deflate_chat.py, with the Node `ws` client:
// perMessageDeflate on, threshold 0 (ws compresses only messages of 1 KiB
// or more by default; here every message it sends is compressed).  Prints
// {"ready": 1, "extensions": <the Sec-WebSocket-Extensions answered>}
// after the welcome, waits for a line on stdin, sends the texts, prints
// {"chats": [...]} once TOTAL live chats came, closes with 1000 and
// prints {"close": code}.

const fs = require('fs');
const readline = require('readline');
const WebSocket = require('ws');

const TIMEOUT = 20000;

function say(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(what) {
    say({ error: String(what) });
    process.exit(1);
}

const [ url, textsFile, totalArg ] = process.argv.slice(2);
const texts = JSON.parse(fs.readFileSync(textsFile, 'utf8'));
const total = Number(totalArg);

const timer = setTimeout(() => fail('timed out'), 3 * TIMEOUT);

const ws = new WebSocket(url, {
    perMessageDeflate: { threshold: 0 }, handshakeTimeout: TIMEOUT,
    maxPayload: 0,
});

let lastId = null;
let extensions = '';
const chats = [];

ws.on('upgrade', (res) => {
    extensions = res.headers['sec-websocket-extensions'] || '';
});

ws.on('error', (e) => fail(e.message));

ws.on('message', (data) => {
    const msg = JSON.parse(data.toString('utf8'));

    if (lastId === null) {
        if (msg.type !== 'welcome') {
            return;
        }
        lastId = msg.data.last_id || 0;
        say({ ready: 1, extensions });

        const rl = readline.createInterface({ input: process.stdin });
        rl.once('line', () => {
            rl.close();
            for (const text of texts) {
                ws.send(JSON.stringify({ type: 'chat', data: { text } }));
            }
        });
        return;
    }

    if (msg.type === 'chat' && (msg.id || 0) > lastId) {
        chats.push([ msg.data.from, msg.data.text ]);
        if (chats.length === total) {
            say({ chats });
            ws.close(1000);
        }
    }
});

ws.on('close', (code) => {
    say({ close: code });
    clearTimeout(timer);
    process.exit(chats.length === total ? 0 : 1);
});
