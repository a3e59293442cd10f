#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/TARGET/.

    fuzz/seeds.py

Frame seeds: 4 control bytes (size limit index, flags, split point) and a
client byte stream of masked frames.  IPC seeds: link frames as in
docs/protocol.md.  JSON seeds: client messages.  Envelope seeds: a control
byte (player id, name, max_message_bytes) and a client message.  Link
seeds: 2 control bytes (read sizes) and what a worker sends.  Redis seeds:
2 control bytes (feed size; since and keep) and what Redis sends (RESP).
Rerun after changing this file; the output is stable.  Files written
earlier and no longer made here (crash inputs kept as seeds) stay.
"""

import os
import struct
import zlib

TOP = os.path.dirname(os.path.abspath(__file__))

MASK = b'\x37\xfa\x21\x3d'


def frame(op, payload=b'', fin=True, rsv=0, mask=True, length=None):
    n = len(payload) if length is None else length
    b = bytes([(0x80 if fin else 0) | rsv << 4 | op])
    m = 0x80 if mask else 0
    if n < 126:
        b += bytes([m | n])
    elif n <= 0xffff:
        b += bytes([m | 126]) + struct.pack('>H', n)
    else:
        b += bytes([m | 127]) + struct.pack('>Q', n)
    if mask:
        b += MASK
        payload = bytes(c ^ MASK[i & 3] for i, c in enumerate(payload))
    return b + payload


def control(limit, flags=0, cut=0):
    return bytes([limit, flags]) + struct.pack('>H', cut)


CHAT = b'{"type":"chat","data":{"text":"hello \xe2\x9c\x93"}}'


def deflate_raw(data):
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b'\x00\x00\xff\xff')
    return out[:-4]


DEFLATED = deflate_raw(CHAT)

FRAME_SEEDS = {
    'text': control(6) + frame(1, CHAT),
    'text_empty': control(6) + frame(1),
    'fragments_ping': control(6, 1, 20) + frame(1, CHAT[:10], fin=False)
    + frame(9, b'p1') + frame(0, CHAT[10:33], fin=False)
    + frame(10, b'x') + frame(0, CHAT[33:]),
    'len16': control(6, 0, 100) + frame(1, b'a' * 300),
    'len64': control(7, 1, 7) + frame(1, b'b' * 5000, length=70000),
    'too_big': control(3) + frame(1, b'abcd'),
    'close_reason': control(6) + frame(8, struct.pack('>H', 1000) + b'bye'),
    'close_empty': control(6) + frame(8) + frame(1, b'after'),
    'close_bad_code': control(6) + frame(8, struct.pack('>H', 1005)),
    'close_bad_utf8': control(6) + frame(8, struct.pack('>H', 1000)
                                         + b'\xff'),
    'binary': control(6) + frame(2, b'\x00\x01'),
    'unmasked': control(6) + frame(1, b'x', mask=False),
    'rsv': control(6) + frame(1, b'x', rsv=4),
    # permessage-deflate negotiated (flag 2): a compressed message (raw
    # DEFLATE of CHAT), one in fragments, RSV1 where it is not allowed
    'deflate': control(6, 2) + frame(1, DEFLATED, rsv=4) + frame(1, CHAT),
    'deflate_frag': control(6, 2, 9) + frame(1, DEFLATED[:5], fin=False,
                                             rsv=4)
    + frame(9, b'p') + frame(0, DEFLATED[5:]),
    'deflate_rsv1_cont': control(6, 2) + frame(1, b'a', fin=False, rsv=4)
    + frame(0, b'b', rsv=4),
    'deflate_rsv1_ping': control(6, 2) + frame(9, b'', rsv=4),
    # also read as Sec-WebSocket-Extensions values
    'ext_offers': control(6) + b'permessage-deflate; client_max_window_bits'
    b', permessage-deflate; server_max_window_bits="10"',
    'opcode3': control(6) + frame(3, b'x'),
    'ping_big': control(6) + frame(9, b'p' * 126),
    'ping_frag': control(6) + frame(9, b'p', fin=False),
    'cont_alone': control(6) + frame(0, b'x'),
    'utf8_split': control(6, 0, 9) + frame(1, b'ab\xe2', fin=False)
    + frame(0, b'\x9c\x93'),
    'utf8_overlong': control(6) + frame(1, b'\xc0\xaf'),
    'utf8_surrogate': control(6) + frame(1, b'\xed\xa0\x80'),
    'top_bit': control(6) + frame(1, length=2 ** 63)[:10],
    'many': control(5, 1, 33) + b''.join(
        frame(1, b'{"n":%d}' % i) + frame(9, b'%d' % i) for i in range(20)),
}


def ipc(type_, body):
    return struct.pack('>IB', 1 + len(body), type_) + body


def str8(s):
    return bytes([len(s)]) + s


IPC_SEEDS = {
    'hello': ipc(0x01, struct.pack('>HI', 2, 4242)),
    'open': ipc(0x02, struct.pack('>QBQ', 7, 2, 99) + str8(b'ABCD')
                + str8(b'Alice \xe2\x9c\x93') + str8(b'0a1b2c.42.7')),
    'message': ipc(0x03, struct.pack('>QQB', 7, 1, 0) + CHAT),
    'close': ipc(0x04, struct.pack('>Q', 7)),
    'rooms': ipc(0x05, struct.pack('>Q', 1)),
    'stats': ipc(0x06, struct.pack('>Q', 2)),
    'send': ipc(0x81, struct.pack('>Q', 7) + b'{"type":"welcome"}'),
    'attach': ipc(0x82, struct.pack('>QQ', 7, 12)),
    'broadcast': ipc(0x83, str8(b'ABCD') + struct.pack('>Q', 12) + CHAT),
    'kick': ipc(0x84, struct.pack('>QH', 7, 1008) + b'slow'),
    'rooms_reply': ipc(0x85, struct.pack('>Q', 1) + b'[]'),
    'stats_reply': ipc(0x88, struct.pack('>Q', 2)
                       + b'# TYPE rooms_sidecar_rooms gauge\n'
                       + b'rooms_sidecar_rooms 1\n'),
    'hello_ack': ipc(0x86, struct.pack('>HI', 2, 99)),
    'ack': ipc(0x87, struct.pack('>QQ', 7, 1) + b'{"type":"error"}'),
    'unknown': ipc(0x42, b'future'),
    'trailing': ipc(0x01, struct.pack('>HI', 1, 1) + b'extra'),
    'short_open': ipc(0x02, b'\x00' * 10),
    'zero_length': b'\x00\x00\x00\x00\x01',
    'stream': ipc(0x01, struct.pack('>HI', 2, 1))
    + ipc(0x02, struct.pack('>QBQ', 1, 0, 0) + str8(b'R') + str8(b'n')
          + str8(b'p'))
    + ipc(0x03, struct.pack('>QQB', 1, 1, 0))
    + ipc(0x04, struct.pack('>Q', 1))
    + ipc(0x83, str8(b'') + struct.pack('>Q', 0)) + b'\x00\x00',
}

JSON_SEEDS = {
    'chat_ref': b'{"type":"chat","data":{"text":"hi"},"ref":"m-1"}',
    'ref_first': b'{"ref":"a b","type":"chat","data":{}}',
    'escaped': b'{"r\\u0065f":"a\\"b\\\\c","data":{"x":[1,{"ref":"n"}]}}',
    'dup': b'{"ref":"a","ref":"b"}',
    'not_string': b'{"ref":5}',
    'deep': b'{"data":' + b'[' * 70 + b']' * 70 + b',"ref":"x"}',
    'nonascii': '{"ref":"caf\u00e9"}'.encode(),
}


def env(control, text):
    return bytes([control]) + text


ENVELOPE_SEEDS = {
    'chat': env(0, CHAT),
    'chat_ref_id': env(1, b'{"type":"chat","data":{"text":"hi"},"ref":"m-1"}'),
    'agree': env(3, b'{"type":"agree","data":{"x":1},"ref":"r"}'),
    'spoof': env(5, b'{"type":"typing","data":{"from":"M","from_id":"x",'
                    b'"n":[1,2.5,-3e5,true,null]},"id":9,"ts":1}'),
    'escapes': env(6, b'{"type":"vote","data":{"t":"\u00e9\ud83d\ude00'
                      b'\"\/\u0001"}}'),
    'numbers': env(1, b'{"type":"n","data":{"a":1E15,"b":-0.0,"c":1e-400,'
                      b'"d":18446744073709551615,"e":-9223372036854775808}}'),
    'reserved': env(0, b'{"type":"state","data":{},"ref":"s"}'),
    'bad_type': env(0, b'{"type":"Chat!","data":{}}'),
    'no_data': env(0, b'{"type":"chat","data":[],"ref":"d"}'),
    'bad_ref': env(0, b'{"type":"chat","data":{},"ref":"\n"}'),
    'not_object': env(0, b'["chat"]'),
    'not_json': env(0, b'{"type":"chat",'),
    'too_long': env(0x10, b'{"type":"chat","data":{"text":"' + b'x' * 64
                    + b'"}}'),
    'deep': env(0, b'{"type":"t","data":' + b'{"a":' * 63 + b'1'
                + b'}' * 63 + b'}'),
    'dup': env(0, b'{"type":"a","type":"chat","data":{},"data":{"x":1}}'),
}


def link_stream(*frames, control=b'\x00\x07'):
    return control + b''.join(frames)


HELLO = ipc(0x01, struct.pack('>HI', 2, 4242))
OPEN = ipc(0x02, struct.pack('>QBQ', 7, 0, 0) + str8(b'ABCD')
           + str8(b'Alice \xe2\x9c\x93') + str8(b'0a1b2c3d4e5f.4242.7'))

LINK_SEEDS = {
    'session': link_stream(
        HELLO, OPEN, ipc(0x03, struct.pack('>QQB', 7, 1, 0) + CHAT),
        ipc(0x05, struct.pack('>Q', 1)), ipc(0x06, struct.pack('>Q', 2)),
        ipc(0x04, struct.pack('>Q', 7))),
    'stats_first': link_stream(HELLO, ipc(0x06, struct.pack('>Q', 1)),
                               ipc(0x06, b'\x00' * 7), control=b'\x03\x02'),
    'resume': link_stream(
        HELLO, ipc(0x02, struct.pack('>QBQ', 9, 3, 41) + str8(b'R_1-2')
                   + str8(b'b') + str8(b'tok.1.9')),
        ipc(0x03, struct.pack('>QQB', 9, 5, 2) + b'{}'), control=b'\xff\x01'),
    'no_hello': link_stream(OPEN, HELLO),
    'bad_version': link_stream(ipc(0x01, struct.pack('>HI', 1, 1))),
    'bad_open': link_stream(HELLO, ipc(0x02, struct.pack('>QBQ', 1, 0, 0)
                                       + str8(b'abcd') + str8(b'n')
                                       + str8(b'p'))),
    'bad_player': link_stream(HELLO, ipc(0x02, struct.pack('>QBQ', 1, 0, 0)
                                         + str8(b'A') + str8(b'n')
                                         + str8(b'a b'))),
    'second_hello': link_stream(HELLO, HELLO, ipc(0x42, b'future'),
                                ipc(0x87, b'')),
    'zero_length': link_stream(HELLO, b'\x00\x00\x00\x00\x01'),
    'too_long': link_stream(HELLO, b'\x01\x00\x00\x01\x03'),
    'short_close': link_stream(HELLO, ipc(0x04, b'\x00' * 7), OPEN),
    'partial': link_stream(HELLO, OPEN[:-3], control=b'\x00\x01'),
    'big_partial': link_stream(HELLO, b'\x00\x10\x00\x00\x03'
                               + b'\x00' * 100),
}


def resp(*items):
    """RESP from Python values: int, bytes (bulk), None (nil), list,
    ('+', text) status, ('-', text) error."""
    out = b''
    for v in items:
        if isinstance(v, int):
            out += b':%d\r\n' % v
        elif isinstance(v, bytes):
            out += b'$%d\r\n%s\r\n' % (len(v), v)
        elif v is None:
            out += b'$-1\r\n'
        elif isinstance(v, tuple):
            out += v[0].encode() + v[1] + b'\r\n'
        else:
            out += b'*%d\r\n' % len(v) + resp(*v)
    return out


def relayed(i, text=b'hi'):
    return (b'{"type":"chat","data":{"text":"%s","from":"A"},"id":%d,'
            b'"ts":1700000000000}' % (text, i))


CHANNEL = b'rooms:room:{ABCD}:pub'

REDIS_SEEDS = {
    'publish': b'\x00\x00' + resp(5, 0, ('-', b'ERR script'), None, -1),
    'settle': b'\x00\x00' + resp(1, 0, ('+', b'OK')),
    'sync': b'\x00\x52' + resp([12, 9, b'e1.3', [relayed(i)
                                                  for i in range(8, 13)], 1,
                                  0, 3, 7]),
    'sync_since': b'\x03\x13' + resp([12, 2, b'e', [relayed(3),
                                                     relayed(5), b'{}',
                                                     relayed(5), 7], 0,
                                        5, 1, 1]),
    'sync_reset': b'\x00\x2d' + resp([3, 0, b'e2', [relayed(2),
                                                    relayed(3)], 0, 0, 0,
                                        0]),
    'sync_bad': b'\x00\x00' + resp([1, 2, 3, [], 4, 0, 1, 1],
                                  [1, 2, b'e', b'h', 0, 0, 1, 1],
                                  [1, 2, b'e', [], 0, 0, b'1', 1],
                                  [1, 2, b'e', [], 0, 1],
                                  ('-', b'NOSCRIPT No matching script')),
    'state': b'\x00\x00' + resp([13, 4], [13, -4], [13]),
    'presence': b'\x00\x00' + resp([1, 0, 2, 9, b'e1.3'], [0, 3, 0, 0, b''],
                                  [1, 0, 2, 9, 4]),
    'heartbeat': b'\x00\x00' + resp([0, 1], [2, 0], [1]),
    'claim': b'\x00\x00' + resp([3, [b'ABCD', b'R', 5]], [1], [3, 7],
                               [b'srv1', b'srv2']),
    'rooms': b'\x00\x00' + resp([b'ABCD', b'3', b'B', b'1', b'C', b'0',
                                b'D', b'x', b'E'], []),
    'time': b'\x00\x00' + resp([b'1700000000', b'123456'],
                              [b'-1', b'99999999999999999999']),
    'message': b'\x01\x00' + resp([b'message', CHANNEL, relayed(42)],
                                 [b'message', CHANNEL, 7],
                                 [b'message', b'other', b'x']),
    'subscribe': b'\x00\x00' + resp([b'subscribe', CHANNEL, 1],
                                   [b'unsubscribe', CHANNEL, 0],
                                   [b'subscribe', b'rooms:server:{s}:barrier',
                                    1]),
    'long_room': b'\x00\x00' + resp([b'message', b'rooms:room:{' + b'R' * 300
                                    + b'}:pub', b'x']),
    'cluster_slots': b'\x00\x00' + resp(
        [[0, 5460, [b'127.0.0.1', 7001, b'm1', []],
          [b'127.0.0.1', 7004, b'r1', []]],
         [5461, 10922, [None, 7002, b'm2', [b'hostname', b'h2']]],
         [10923, 16383, [b'?', 7003, b'm3', []]]],
        [[5, 4, [b'h', 1]]]),
    'redirect': b'\x00\x00' + resp(('-', b'MOVED 3999 127.0.0.1:6381'),
                                  ('-', b'ASK 12 [::1]:6381'),
                                  ('-', b'MOVED 7 ::1:7000'),
                                  ('-', b'MOVED 7 :7000'),
                                  ('-', b'TRYAGAIN Multiple keys'),
                                  ('-', b'CLUSTERDOWN The cluster is down'),
                                  b'room:{ABCD}:pub', b'a}b{c}{}'),
    'nested': b'\x00\x00' + b'*1\r\n' * 8 + b':1\r\n',
    'protocol_error': b'\x00\x00' + resp(1) + b'?\r\n',
    'huge_array': b'\x00\x00' + b'*2000000000\r\n',
}


def write(kind, seeds):
    d = os.path.join(TOP, 'corpus', kind)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    write('frame', FRAME_SEEDS)
    write('ipc', IPC_SEEDS)
    write('json', JSON_SEEDS)
    write('envelope', ENVELOPE_SEEDS)
    write('link', LINK_SEEDS)
    write('redis', REDIS_SEEDS)
