#!/usr/bin/python3
"""Writes the seed corpus of the fuzz targets: fuzz/corpus/{frame,ipc}/.

    fuzz/seeds.py

Frame seeds: 4 control bytes (size limit index, flags, split point) and a
client byte stream of masked frames.  IPC seeds: link frames as in
docs/protocol.md.  Rerun after changing this file; the output is stable.
"""

import os
import struct

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
    'send': ipc(0x81, struct.pack('>Q', 7) + b'{"type":"welcome"}'),
    'attach': ipc(0x82, struct.pack('>QQ', 7, 12)),
    'broadcast': ipc(0x83, str8(b'ABCD') + struct.pack('>Q', 12) + CHAT),
    'kick': ipc(0x84, struct.pack('>QH', 7, 1008) + b'slow'),
    'rooms_reply': ipc(0x85, struct.pack('>Q', 1) + b'[]'),
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
