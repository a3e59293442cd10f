/*
 * Copyright (C) ngx_rooms developers
 */


#include <string.h>

#include "ngx_http_rooms_frame.h"


/*
 * Parser states.  A frame header is gathered in p->hdr in up to three
 * steps (2 bytes, extended length, mask) so that every check is made as
 * soon as the bytes it rests on have arrived; the payload then goes to
 * p->buf (text) or p->ctl (control frames), unmasked on the way.
 */

enum {
    ngx_rooms_ws_st_header = 0,
    ngx_rooms_ws_st_buffer,           /* text payload: check p->buf size */
    ngx_rooms_ws_st_data,
    ngx_rooms_ws_st_control,
    ngx_rooms_ws_st_closed,
    ngx_rooms_ws_st_failed
};


static unsigned ngx_rooms_ws_header(ngx_rooms_ws_parser_t *p);
static size_t ngx_rooms_ws_copy(ngx_rooms_ws_parser_t *p, uint8_t *dst,
    uint8_t **pos, uint8_t *end);
static int ngx_rooms_ws_control(ngx_rooms_ws_parser_t *p,
    ngx_rooms_ws_event_t *ev);
static int ngx_rooms_ws_fail(ngx_rooms_ws_parser_t *p,
    ngx_rooms_ws_event_t *ev, unsigned status, const char *reason);


void
ngx_rooms_ws_parser_init(ngx_rooms_ws_parser_t *p, size_t max_message)
{
    memset(p, 0, sizeof(ngx_rooms_ws_parser_t));

    p->max_message = max_message;
    p->hdr_need = 2;
}


int
ngx_rooms_ws_parse(ngx_rooms_ws_parser_t *p, uint8_t **pos, uint8_t *end,
    ngx_rooms_ws_event_t *ev)
{
    size_t     n;
    uint8_t   *dst;
    unsigned   status;

    for ( ;; ) {

        switch (p->state) {

        case ngx_rooms_ws_st_header:
            n = p->hdr_need - p->hdr_len;

            if (n > (size_t) (end - *pos)) {
                n = end - *pos;
            }

            if (n) {
                memcpy(p->hdr + p->hdr_len, *pos, n);
                p->hdr_len += n;
                *pos += n;
            }

            if (p->hdr_len < p->hdr_need) {
                return NGX_ROOMS_WS_AGAIN;
            }

            status = ngx_rooms_ws_header(p);

            if (status) {
                return ngx_rooms_ws_fail(p, ev, status, p->reason);
            }

            break;

        case ngx_rooms_ws_st_buffer:

            /* msg_len + frame_left <= max_message: no overflow */

            if (p->msg_len + p->frame_left > p->buf_size) {
                ev->opcode = NGX_ROOMS_WS_OP_TEXT;
                ev->data = NULL;
                ev->len = p->msg_len + p->frame_left;
                ev->status = 0;
                ev->reason = NULL;
                ev->compressed = p->compressed;
                return NGX_ROOMS_WS_NEED_BUF;
            }

            p->state = ngx_rooms_ws_st_data;

            /* fall through */

        case ngx_rooms_ws_st_data:
            if (p->frame_left) {
                dst = p->buf + p->msg_len;
                n = ngx_rooms_ws_copy(p, dst, pos, end);
                p->msg_len += n;

                /* compressed text is checked once inflated */

                if (!p->compressed
                    && ngx_rooms_utf8_feed(&p->utf8, dst, n)
                    == NGX_ROOMS_UTF8_INVALID)
                {
                    return ngx_rooms_ws_fail(p, ev,
                                             NGX_ROOMS_WS_CLOSE_INVALID_DATA,
                                             "invalid UTF-8 in text");
                }

                if (p->frame_left) {
                    return NGX_ROOMS_WS_AGAIN;
                }
            }

            p->state = ngx_rooms_ws_st_header;

            if (!p->fin) {
                break;
            }

            if (!p->compressed
                && ngx_rooms_utf8_feed(&p->utf8, NULL, 0) != NGX_ROOMS_UTF8_OK)
            {
                return ngx_rooms_ws_fail(p, ev,
                                         NGX_ROOMS_WS_CLOSE_INVALID_DATA,
                                         "text ends inside a UTF-8 sequence");
            }

            ev->opcode = NGX_ROOMS_WS_OP_TEXT;
            ev->data = p->buf;
            ev->len = p->msg_len;
            ev->status = 0;
            ev->reason = NULL;
            ev->compressed = p->compressed;

            p->msg_len = 0;
            p->in_message = 0;
            p->compressed = 0;
            p->utf8.state = 0;
            p->utf8.codepoint = 0;

            return NGX_ROOMS_WS_EVENT;

        case ngx_rooms_ws_st_control:
            p->ctl_len += ngx_rooms_ws_copy(p, p->ctl + p->ctl_len, pos, end);

            if (p->frame_left) {
                return NGX_ROOMS_WS_AGAIN;
            }

            p->state = ngx_rooms_ws_st_header;

            return ngx_rooms_ws_control(p, ev);

        case ngx_rooms_ws_st_closed:

            /* nothing may follow a close frame: discard it */

            *pos = end;
            return NGX_ROOMS_WS_AGAIN;

        default: /* ngx_rooms_ws_st_failed */
            return ngx_rooms_ws_fail(p, ev, p->status, p->reason);
        }
    }
}


int
ngx_rooms_ws_parser_idle(const ngx_rooms_ws_parser_t *p)
{
    return p->state == ngx_rooms_ws_st_header && p->hdr_len == 0
           && !p->in_message;
}


size_t
ngx_rooms_ws_frame_header(uint8_t *buf, unsigned opcode, uint64_t len)
{
    unsigned  i;

    buf[0] = (uint8_t) (0x80 | opcode);   /* opcode may carry RSV1 */

    if (len < 126) {
        buf[1] = (uint8_t) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (uint8_t) (len >> 8);
        buf[3] = (uint8_t) len;
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[2 + i] = (uint8_t) (len >> (56 - 8 * i));
    }

    return 10;
}


unsigned
ngx_rooms_ws_check_close(const uint8_t *data, size_t len)
{
    unsigned  code;

    if (len == 0) {
        return 0;
    }

    if (len == 1) {
        return NGX_ROOMS_WS_CLOSE_PROTOCOL;
    }

    code = (unsigned) data[0] << 8 | data[1];

    if (!((code >= 1000 && code <= 1003)
          || (code >= 1007 && code <= 1011)
          || (code >= 3000 && code <= 4999)))
    {
        return NGX_ROOMS_WS_CLOSE_PROTOCOL;
    }

    if (ngx_rooms_utf8_valid(data + 2, len - 2) != NGX_ROOMS_UTF8_OK) {
        return NGX_ROOMS_WS_CLOSE_INVALID_DATA;
    }

    return 0;
}


/*
 * Checks the header bytes gathered so far: p->hdr_len is 2 (the first two
 * bytes), 4 or 10 (16 or 64 bit extended length), or 6, 8 or 14 (the
 * mask, so the header is complete).  Sets hdr_need to what is wanted
 * next.  Returns 0 or the status to close with, the reason in p->reason.
 */

static unsigned
ngx_rooms_ws_header(ngx_rooms_ws_parser_t *p)
{
    uint8_t   *h;
    uint64_t   len;

    h = p->hdr;

    switch (p->hdr_len) {

    case 2:
        if (h[0] & 0x30 || (h[0] & NGX_ROOMS_WS_RSV1 && !p->deflate)) {
            p->reason = "reserved bits set";
            return NGX_ROOMS_WS_CLOSE_PROTOCOL;
        }

        if (!(h[1] & 0x80)) {
            p->reason = "unmasked client frame";
            return NGX_ROOMS_WS_CLOSE_PROTOCOL;
        }

        p->fin = h[0] >> 7;
        p->opcode = h[0] & 0x0f;
        len = h[1] & 0x7f;

        switch (p->opcode) {

        case NGX_ROOMS_WS_OP_CONT:
            if (!p->in_message) {
                p->reason = "continuation frame outside a message";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            if (h[0] & NGX_ROOMS_WS_RSV1) {
                p->reason = "RSV1 set on a continuation frame";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            break;

        case NGX_ROOMS_WS_OP_TEXT:
        case NGX_ROOMS_WS_OP_BINARY:
            if (p->in_message) {
                p->reason = "new message inside a fragmented one";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            if (p->opcode == NGX_ROOMS_WS_OP_BINARY) {
                p->reason = "binary frames are not supported";
                return NGX_ROOMS_WS_CLOSE_UNSUPPORTED;
            }

            p->in_message = !p->fin;
            p->compressed = (h[0] & NGX_ROOMS_WS_RSV1) ? 1 : 0;
            break;

        case NGX_ROOMS_WS_OP_CLOSE:
        case NGX_ROOMS_WS_OP_PING:
        case NGX_ROOMS_WS_OP_PONG:
            if (!p->fin) {
                p->reason = "fragmented control frame";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            if (h[0] & NGX_ROOMS_WS_RSV1) {
                p->reason = "RSV1 set on a control frame";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            if (len > NGX_ROOMS_WS_CONTROL_MAX) {
                p->reason = "control frame payload over 125 bytes";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            if (p->opcode == NGX_ROOMS_WS_OP_CLOSE && len == 1) {
                p->reason = "close frame payload of 1 byte";
                return NGX_ROOMS_WS_CLOSE_PROTOCOL;
            }

            break;

        default:
            p->reason = "reserved opcode";
            return NGX_ROOMS_WS_CLOSE_PROTOCOL;
        }

        if (len == 126) {
            p->hdr_need = 4;
            return 0;
        }

        if (len == 127) {
            p->hdr_need = 10;
            return 0;
        }

        p->hdr_need = 6;
        break;

    case 4:
        len = (uint64_t) h[2] << 8 | h[3];
        p->hdr_need = 8;
        break;

    case 10:
        if (h[2] & 0x80) {
            p->reason = "frame length with the top bit set";
            return NGX_ROOMS_WS_CLOSE_PROTOCOL;
        }

        len = (uint64_t) h[2] << 56 | (uint64_t) h[3] << 48
              | (uint64_t) h[4] << 40 | (uint64_t) h[5] << 32
              | (uint64_t) h[6] << 24 | (uint64_t) h[7] << 16
              | (uint64_t) h[8] << 8 | h[9];
        p->hdr_need = 14;
        break;

    default:

        /* the mask: the header is complete */

        memcpy(p->mask, h + p->hdr_len - 4, 4);
        p->mask_pos = 0;
        p->hdr_len = 0;
        p->hdr_need = 2;

        if (p->opcode & 0x8) {
            p->ctl_len = 0;
            p->state = ngx_rooms_ws_st_control;

        } else {
            p->state = ngx_rooms_ws_st_buffer;
        }

        return 0;
    }

    /* the payload length is known: a data frame may end the message here */

    p->frame_left = len;

    if (!(p->opcode & 0x8) && len > p->max_message - p->msg_len) {
        p->reason = "message too big";
        return NGX_ROOMS_WS_CLOSE_TOO_BIG;
    }

    return 0;
}


/*
 * Copies what is available of the frame payload to dst, unmasking it,
 * and advances *pos; returns the number of bytes copied.
 */

static size_t
ngx_rooms_ws_copy(ngx_rooms_ws_parser_t *p, uint8_t *dst, uint8_t **pos,
    uint8_t *end)
{
    size_t     i, n;
    uint8_t   *src, m[8];
    uint64_t   w, mw;

    n = end - *pos;

    if (n > p->frame_left) {
        n = (size_t) p->frame_left;
    }

    if (n == 0) {
        return 0;
    }

    src = *pos;

    for (i = 0; i < 8; i++) {
        m[i] = p->mask[(p->mask_pos + i) & 3];
    }

    memcpy(&mw, m, 8);

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, src + i, 8);
        w ^= mw;
        memcpy(dst + i, &w, 8);
    }

    for ( /* void */ ; i < n; i++) {
        dst[i] = src[i] ^ m[i & 7];
    }

    p->mask_pos = (p->mask_pos + n) & 3;
    p->frame_left -= n;
    *pos += n;

    return n;
}


static int
ngx_rooms_ws_control(ngx_rooms_ws_parser_t *p, ngx_rooms_ws_event_t *ev)
{
    unsigned  status;

    ev->opcode = p->opcode;
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    ev->status = 0;
    ev->reason = NULL;
    ev->compressed = 0;

    if (p->opcode != NGX_ROOMS_WS_OP_CLOSE) {
        return NGX_ROOMS_WS_EVENT;
    }

    if (p->ctl_len == 0) {
        ev->status = NGX_ROOMS_WS_CLOSE_NO_STATUS;

    } else {
        status = ngx_rooms_ws_check_close(p->ctl, p->ctl_len);

        if (status) {
            return ngx_rooms_ws_fail(p, ev, status,
                                     status == NGX_ROOMS_WS_CLOSE_PROTOCOL
                                     ? "invalid close status"
                                     : "invalid UTF-8 in close reason");
        }

        ev->status = (unsigned) p->ctl[0] << 8 | p->ctl[1];
        ev->data = p->ctl + 2;
        ev->len = p->ctl_len - 2;
    }

    p->closed = 1;
    p->state = ngx_rooms_ws_st_closed;

    return NGX_ROOMS_WS_EVENT;
}


static int
ngx_rooms_ws_fail(ngx_rooms_ws_parser_t *p, ngx_rooms_ws_event_t *ev,
    unsigned status, const char *reason)
{
    p->state = ngx_rooms_ws_st_failed;
    p->status = status;
    p->reason = reason;

    ev->opcode = 0;
    ev->data = NULL;
    ev->len = 0;
    ev->status = status;
    ev->reason = reason;
    ev->compressed = 0;

    return NGX_ROOMS_WS_ERROR;
}
