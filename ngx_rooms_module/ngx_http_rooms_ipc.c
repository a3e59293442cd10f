/*
 * Copyright (C) ngx_rooms developers
 */


#include <string.h>

#include "ngx_http_rooms_ipc.h"


static int ngx_rooms_ipc_layout(const ngx_rooms_ipc_msg_t *msg,
    size_t *head, size_t *rest);
static int ngx_rooms_ipc_get_str8(const uint8_t **pos, const uint8_t *end,
    ngx_rooms_ipc_str_t *str);
static uint8_t *ngx_rooms_ipc_put_str8(uint8_t *p,
    const ngx_rooms_ipc_str_t *str);
static uint16_t ngx_rooms_ipc_get16(const uint8_t *p);
static uint32_t ngx_rooms_ipc_get32(const uint8_t *p);
static uint64_t ngx_rooms_ipc_get64(const uint8_t *p);
static uint8_t *ngx_rooms_ipc_put16(uint8_t *p, uint16_t v);
static uint8_t *ngx_rooms_ipc_put32(uint8_t *p, uint32_t v);
static uint8_t *ngx_rooms_ipc_put64(uint8_t *p, uint64_t v);


long
ngx_rooms_ipc_decode(const uint8_t *buf, size_t len,
    ngx_rooms_ipc_msg_t *msg)
{
    uint32_t        n;
    const uint8_t  *p, *end;

    if (len < 4) {
        return NGX_ROOMS_IPC_INCOMPLETE;
    }

    n = ngx_rooms_ipc_get32(buf);

    if (n == 0 || n > NGX_ROOMS_IPC_MAX_FRAME) {
        return NGX_ROOMS_IPC_MALFORMED;
    }

    if (len - 4 < n) {
        return NGX_ROOMS_IPC_INCOMPLETE;
    }

    memset(msg, 0, sizeof(ngx_rooms_ipc_msg_t));

    msg->type = buf[4];

    p = buf + NGX_ROOMS_IPC_HEADER_LEN;
    end = buf + 4 + n;

    switch (msg->type) {

    case NGX_ROOMS_IPC_HELLO:
    case NGX_ROOMS_IPC_HELLO_ACK:
        if (end - p < 6) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->version = ngx_rooms_ipc_get16(p);
        msg->pid = ngx_rooms_ipc_get32(p + 2);
        return 4 + (long) n;

    case NGX_ROOMS_IPC_OPEN:
        if (end - p < 17) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        msg->flags = p[8];
        msg->since = ngx_rooms_ipc_get64(p + 9);
        p += 17;

        if (ngx_rooms_ipc_get_str8(&p, end, &msg->room) != 0
            || ngx_rooms_ipc_get_str8(&p, end, &msg->name) != 0
            || ngx_rooms_ipc_get_str8(&p, end, &msg->player) != 0)
        {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        return 4 + (long) n;

    case NGX_ROOMS_IPC_CLOSE:
    case NGX_ROOMS_IPC_ROOMS:
    case NGX_ROOMS_IPC_STATS:
        if (end - p < 8) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        return 4 + (long) n;

    case NGX_ROOMS_IPC_ATTACH:
        if (end - p < 16) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        msg->last_id = ngx_rooms_ipc_get64(p + 8);
        return 4 + (long) n;

    case NGX_ROOMS_IPC_MESSAGE:
        if (end - p < 17) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        msg->seq = ngx_rooms_ipc_get64(p + 8);
        msg->flags = p[16];
        p += 17;
        break;

    case NGX_ROOMS_IPC_ACK:
        if (end - p < 16) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        msg->seq = ngx_rooms_ipc_get64(p + 8);
        p += 16;
        break;

    case NGX_ROOMS_IPC_SEND:
    case NGX_ROOMS_IPC_ROOMS_REPLY:
    case NGX_ROOMS_IPC_STATS_REPLY:
        if (end - p < 8) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        p += 8;
        break;

    case NGX_ROOMS_IPC_BROADCAST:
        if (ngx_rooms_ipc_get_str8(&p, end, &msg->room) != 0
            || end - p < 8)
        {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->last_id = ngx_rooms_ipc_get64(p);
        p += 8;
        break;

    case NGX_ROOMS_IPC_KICK:
        if (end - p < 10) {
            return NGX_ROOMS_IPC_MALFORMED;
        }

        msg->id = ngx_rooms_ipc_get64(p);
        msg->status = ngx_rooms_ipc_get16(p + 8);
        p += 10;
        break;

    default:
        /* unknown: the whole body is the payload, for the caller to skip */
        break;
    }

    msg->payload.len = end - p;
    msg->payload.data = p;

    return 4 + (long) n;
}


size_t
ngx_rooms_ipc_size(const ngx_rooms_ipc_msg_t *msg)
{
    size_t  head, rest;

    if (ngx_rooms_ipc_layout(msg, &head, &rest) != 0) {
        return 0;
    }

    return NGX_ROOMS_IPC_HEADER_LEN + head + rest;
}


size_t
ngx_rooms_ipc_head_size(const ngx_rooms_ipc_msg_t *msg)
{
    size_t  head, rest;

    if (ngx_rooms_ipc_layout(msg, &head, &rest) != 0) {
        return 0;
    }

    return NGX_ROOMS_IPC_HEADER_LEN + head;
}


uint8_t *
ngx_rooms_ipc_encode(uint8_t *buf, const ngx_rooms_ipc_msg_t *msg)
{
    size_t    head, rest;
    uint8_t  *p;

    if (ngx_rooms_ipc_layout(msg, &head, &rest) != 0) {
        return buf;
    }

    p = ngx_rooms_ipc_encode_head(buf, msg);

    if (rest) {
        memcpy(p, msg->payload.data, rest);
        p += rest;
    }

    return p;
}


uint8_t *
ngx_rooms_ipc_encode_head(uint8_t *buf, const ngx_rooms_ipc_msg_t *msg)
{
    size_t    head, rest;
    uint8_t  *p;

    if (ngx_rooms_ipc_layout(msg, &head, &rest) != 0) {
        return buf;
    }

    p = ngx_rooms_ipc_put32(buf, (uint32_t) (1 + head + rest));
    *p++ = (uint8_t) msg->type;

    switch (msg->type) {

    case NGX_ROOMS_IPC_HELLO:
    case NGX_ROOMS_IPC_HELLO_ACK:
        p = ngx_rooms_ipc_put16(p, (uint16_t) msg->version);
        p = ngx_rooms_ipc_put32(p, msg->pid);
        break;

    case NGX_ROOMS_IPC_OPEN:
        p = ngx_rooms_ipc_put64(p, msg->id);
        *p++ = (uint8_t) msg->flags;
        p = ngx_rooms_ipc_put64(p, msg->since);
        p = ngx_rooms_ipc_put_str8(p, &msg->room);
        p = ngx_rooms_ipc_put_str8(p, &msg->name);
        p = ngx_rooms_ipc_put_str8(p, &msg->player);
        break;

    case NGX_ROOMS_IPC_ATTACH:
        p = ngx_rooms_ipc_put64(p, msg->id);
        p = ngx_rooms_ipc_put64(p, msg->last_id);
        break;

    case NGX_ROOMS_IPC_MESSAGE:
        p = ngx_rooms_ipc_put64(p, msg->id);
        p = ngx_rooms_ipc_put64(p, msg->seq);
        *p++ = (uint8_t) msg->flags;
        break;

    case NGX_ROOMS_IPC_ACK:
        p = ngx_rooms_ipc_put64(p, msg->id);
        p = ngx_rooms_ipc_put64(p, msg->seq);
        break;

    case NGX_ROOMS_IPC_BROADCAST:
        p = ngx_rooms_ipc_put_str8(p, &msg->room);
        p = ngx_rooms_ipc_put64(p, msg->last_id);
        break;

    case NGX_ROOMS_IPC_KICK:
        p = ngx_rooms_ipc_put64(p, msg->id);
        p = ngx_rooms_ipc_put16(p, (uint16_t) msg->status);
        break;

    default:
        /* CLOSE, ROOMS, STATS, SEND, ROOMS_REPLY, STATS_REPLY */
        p = ngx_rooms_ipc_put64(p, msg->id);
        break;
    }

    return p;
}


/*
 * Splits the body of msg into the fixed part (head) and the payload bytes
 * it carries (rest, 0 for types without a payload); -1 if msg cannot be
 * encoded.
 */

static int
ngx_rooms_ipc_layout(const ngx_rooms_ipc_msg_t *msg, size_t *head,
    size_t *rest)
{
    *rest = 0;

    switch (msg->type) {

    case NGX_ROOMS_IPC_HELLO:
    case NGX_ROOMS_IPC_HELLO_ACK:
        *head = 6;
        return 0;

    case NGX_ROOMS_IPC_OPEN:
        if (msg->room.len > NGX_ROOMS_IPC_STR8_MAX
            || msg->name.len > NGX_ROOMS_IPC_STR8_MAX
            || msg->player.len > NGX_ROOMS_IPC_STR8_MAX)
        {
            return -1;
        }

        *head = 17 + 1 + msg->room.len + 1 + msg->name.len
                + 1 + msg->player.len;
        return 0;

    case NGX_ROOMS_IPC_CLOSE:
    case NGX_ROOMS_IPC_ROOMS:
    case NGX_ROOMS_IPC_STATS:
        *head = 8;
        return 0;

    case NGX_ROOMS_IPC_ATTACH:
        *head = 16;
        return 0;

    case NGX_ROOMS_IPC_MESSAGE:
        *head = 17;
        break;

    case NGX_ROOMS_IPC_ACK:
        *head = 16;
        break;

    case NGX_ROOMS_IPC_SEND:
    case NGX_ROOMS_IPC_ROOMS_REPLY:
    case NGX_ROOMS_IPC_STATS_REPLY:
        *head = 8;
        break;

    case NGX_ROOMS_IPC_BROADCAST:
        if (msg->room.len > NGX_ROOMS_IPC_STR8_MAX) {
            return -1;
        }

        *head = 1 + msg->room.len + 8;
        break;

    case NGX_ROOMS_IPC_KICK:
        *head = 10;
        break;

    default:
        return -1;
    }

    if (msg->payload.len > NGX_ROOMS_IPC_MAX_FRAME - 1 - *head) {
        return -1;
    }

    *rest = msg->payload.len;

    return 0;
}


static int
ngx_rooms_ipc_get_str8(const uint8_t **pos, const uint8_t *end,
    ngx_rooms_ipc_str_t *str)
{
    size_t          len;
    const uint8_t  *p;

    p = *pos;

    if (p == end) {
        return -1;
    }

    len = *p++;

    if ((size_t) (end - p) < len) {
        return -1;
    }

    str->len = len;
    str->data = p;

    *pos = p + len;

    return 0;
}


static uint8_t *
ngx_rooms_ipc_put_str8(uint8_t *p, const ngx_rooms_ipc_str_t *str)
{
    *p++ = (uint8_t) str->len;

    if (str->len) {
        memcpy(p, str->data, str->len);
    }

    return p + str->len;
}


static uint16_t
ngx_rooms_ipc_get16(const uint8_t *p)
{
    return (uint16_t) (p[0] << 8 | p[1]);
}


static uint32_t
ngx_rooms_ipc_get32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
           | (uint32_t) p[2] << 8 | p[3];
}


static uint64_t
ngx_rooms_ipc_get64(const uint8_t *p)
{
    return (uint64_t) ngx_rooms_ipc_get32(p) << 32
           | ngx_rooms_ipc_get32(p + 4);
}


static uint8_t *
ngx_rooms_ipc_put16(uint8_t *p, uint16_t v)
{
    *p++ = (uint8_t) (v >> 8);
    *p++ = (uint8_t) v;

    return p;
}


static uint8_t *
ngx_rooms_ipc_put32(uint8_t *p, uint32_t v)
{
    *p++ = (uint8_t) (v >> 24);
    *p++ = (uint8_t) (v >> 16);
    *p++ = (uint8_t) (v >> 8);
    *p++ = (uint8_t) v;

    return p;
}


static uint8_t *
ngx_rooms_ipc_put64(uint8_t *p, uint64_t v)
{
    p = ngx_rooms_ipc_put32(p, (uint32_t) (v >> 32));

    return ngx_rooms_ipc_put32(p, (uint32_t) v);
}
