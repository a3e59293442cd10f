'use strict';

// Cross-check of ngx_rooms with the Node `ws` client library.
//
//     node ws_check.js URL LIMIT SIZE...
//
// Same checks as t/clients/ws_check.py: for every SIZE one text message
// of exactly SIZE bytes (a chat envelope padded to it, or below the
// smallest envelope a text that is not JSON), relayed back whole or
// answered with "bad_envelope"; LIMIT + 1 bytes closed with 1009; clean
// closes with 1000.  One TAP line per check; exit status 1 on a failure.

const WebSocket = require('ws');

const EMPTY = '{"type":"chat","data":{"text":""}}';
const TIMEOUT = 5000;

let failed = 0;

function check(cond, what) {
    console.log((cond ? 'ok - ' : 'not ok - ') + what);
    if (!cond) {
        failed = 1;
    }
}

function messageOf(size) {
    if (size < EMPTY.length) {
        return [ 'x'.repeat(size), null ];
    }
    let pad = size - EMPTY.length;
    let text = '';
    if (pad >= 5) {
        text = 'é✓';
        pad -= 5;
    }
    text += 'a'.repeat(pad);
    const raw = JSON.stringify({ type: 'chat', data: { text } });
    if (Buffer.byteLength(raw) !== size) {
        throw new Error(`envelope of ${size} bytes came out wrong`);
    }
    return [ raw, text ];
}

// A connected client whose messages are awaited one by one.
function open(url) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(url, {
            rejectUnauthorized: false, perMessageDeflate: false,
            handshakeTimeout: TIMEOUT, maxPayload: 0,
        });
        const c = { ws, queue: [], waiters: [], closeCode: null };

        ws.on('message', (data, isBinary) => {
            const m = isBinary ? { type: '_binary' }
                               : JSON.parse(data.toString('utf8'));
            const w = c.waiters.shift();
            if (w) {
                w.resolve(m);
            } else {
                c.queue.push(m);
            }
        });
        ws.on('close', (code) => {
            c.closeCode = code;
            for (const w of c.waiters.splice(0)) {
                w.reject(new Error(`closed with ${code}`));
            }
        });
        ws.on('open', () => resolve(c));
        ws.on('error', (e) => reject(e));
    });
}

function next(c) {
    if (c.queue.length) {
        return Promise.resolve(c.queue.shift());
    }
    if (c.closeCode !== null) {
        return Promise.reject(new Error(`closed with ${c.closeCode}`));
    }
    return new Promise((resolve, reject) => {
        const w = { resolve, reject };
        const timer = setTimeout(() => {
            c.waiters.splice(c.waiters.indexOf(w), 1);
            reject(new Error('timeout'));
        }, TIMEOUT);
        w.resolve = (m) => { clearTimeout(timer); resolve(m); };
        w.reject = (e) => { clearTimeout(timer); reject(e); };
        c.waiters.push(w);
    });
}

async function nextOf(c, types) {
    for (;;) {
        const m = await next(c);
        if (types.includes(m.type)) {
            return m;
        }
    }
}

function closed(c) {
    if (c.closeCode !== null) {
        return Promise.resolve(c.closeCode);
    }
    return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(null), TIMEOUT);
        c.ws.on('close', (code) => { clearTimeout(timer); resolve(code); });
    });
}

async function main(url, limit, sizes) {
    let c = await open(url);
    const welcome = await nextOf(c, [ 'welcome' ]);
    check(welcome.type === 'welcome', 'node: welcome');

    for (const size of sizes) {
        const [ raw, text ] = messageOf(size);
        c.ws.send(raw);
        if (text === null) {
            const m = await nextOf(c, [ 'error' ]);
            check(m.data.code === 'bad_envelope',
                  `node: ${size} B not-JSON message: bad_envelope`);
        } else {
            const m = await nextOf(c, [ 'chat' ]);
            check(m.data.text === text,
                  `node: ${size} B message relayed whole`);
        }
    }

    c.ws.close(1000);
    let code = await closed(c);
    check(code === 1000, `node: clean close, server answered ${code}`);

    c = await open(url);
    await nextOf(c, [ 'welcome' ]);
    c.ws.send(messageOf(limit + 1)[0]);
    code = await closed(c);
    check(code === 1009,
          `node: ${limit + 1} B message: close 1009 (got ${code})`);
}

const [ url, limit, ...sizes ] = process.argv.slice(2);

main(url, Number(limit), sizes.map(Number))
    .catch((e) => check(false, `node: ${e.message}`))
    .finally(() => process.exit(failed));
