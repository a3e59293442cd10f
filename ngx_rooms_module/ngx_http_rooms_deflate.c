
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <zlib.h>

#include "ngx_http_rooms_module.h"


/*
 * permessage-deflate (RFC 7692) for the clients that negotiated it.  Both
 * directions are negotiated without context takeover, so that a worker
 * needs one deflate and one inflate stream for all its clients, reset
 * for every message:
 *
 *   - a message to clients is compressed once, and the compressed frame
 *     is queued on every deflate client that gets it (the others get the
 *     plain frame);
 *   - a message from a client is inflated once reassembled, into a
 *     buffer that never grows past rooms_max_message_size.
 */


/*
 * Shorter messages are sent as they are: a few bytes to gain at best.
 * A relayed chat envelope (from, from_id, id, ts) is always longer.
 */
#define NGX_HTTP_ROOMS_DEFLATE_MIN       64

/*
 * zlib's defaults: level 6, memLevel 8 (whose 64 KiB hash table every
 * deflateReset() clears); measured in docs/benchmarks.md, level 1 or
 * memLevel 4 save under 10% of a chat message's 5 us, for the same output
 */
#define NGX_HTTP_ROOMS_DEFLATE_LEVEL     6
#define NGX_HTTP_ROOMS_DEFLATE_MEMLEVEL  8

/* the compression scratch buffer is kept up to this size */
#define NGX_HTTP_ROOMS_DEFLATE_KEEP      (64 * 1024)


static ngx_http_rooms_frame_t *ngx_http_rooms_deflate_frame(u_char *payload,
    size_t len, ngx_log_t *log);


static u_char      ngx_http_rooms_deflate_tail[4] = { 0x00, 0x00, 0xff, 0xff };

static z_stream    ngx_http_rooms_zout;
static z_stream    ngx_http_rooms_zin;
static ngx_uint_t  ngx_http_rooms_zout_init;
static ngx_uint_t  ngx_http_rooms_zin_init;
static u_char     *ngx_http_rooms_scratch;
static size_t      ngx_http_rooms_scratch_size;


/*
 * The frame of a text message for this client: the compressed one if it
 * negotiated permessage-deflate and compressing is worth it, else the
 * plain one.  NULL if the frame cannot be built.
 */

ngx_http_rooms_frame_t *
ngx_http_rooms_text_frame(ngx_http_rooms_text_t *t,
    ngx_http_rooms_conn_t *conn)
{
    if (conn->deflate && t->len <= conn->deflate_max) {

        if (!t->tried) {
            t->tried = 1;
            t->deflated = ngx_http_rooms_deflate_frame(t->payload, t->len,
                                                       t->log);
            if (t->deflated) {
                t->deflated->refs = 1;
            }
        }

        if (t->deflated) {
            return t->deflated;
        }
    }

    if (t->plain == NULL) {
        t->plain = ngx_http_rooms_frame_create(NGX_ROOMS_WS_OP_TEXT,
                                               t->payload, t->len, t->log);
        if (t->plain) {
            t->plain->refs = 1;
        }
    }

    return t->plain;
}


void
ngx_http_rooms_text_release(ngx_http_rooms_text_t *t)
{
    if (t->plain) {
        ngx_http_rooms_frame_release(t->plain);
        t->plain = NULL;
    }

    if (t->deflated) {
        ngx_http_rooms_frame_release(t->deflated);
        t->deflated = NULL;
    }
}


/*
 * A compressed text frame (RSV1 set) of the payload, or NULL when it is
 * not worth it (short, or not smaller once compressed) or fails: the
 * caller sends the plain frame then.  The frame is as any other: refs 0.
 */

static ngx_http_rooms_frame_t *
ngx_http_rooms_deflate_frame(u_char *payload, size_t len, ngx_log_t *log)
{
    int                      rc;
    size_t                   size, n, h;
    z_stream                *zs;
    ngx_http_rooms_frame_t  *frame;

    if (len < NGX_HTTP_ROOMS_DEFLATE_MIN) {
        return NULL;
    }

    zs = &ngx_http_rooms_zout;

    if (!ngx_http_rooms_zout_init) {

        /*
         * A raw stream (no zlib header), the largest window: a message
         * compressed on its own refers back at most its own length, so
         * that a client that asked for a smaller window gets it for
         * messages that fit (see ngx_http_rooms_conn_t's deflate_max).
         */

        rc = deflateInit2(zs, NGX_HTTP_ROOMS_DEFLATE_LEVEL, Z_DEFLATED,
                          -MAX_WBITS, NGX_HTTP_ROOMS_DEFLATE_MEMLEVEL,
                          Z_DEFAULT_STRATEGY);
        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "rooms: deflateInit2() failed: %d", rc);
            return NULL;
        }

        ngx_http_rooms_zout_init = 1;

    } else if (deflateReset(zs) != Z_OK) {
        return NULL;
    }

    /* room for what would be no gain, and the flush's empty block */

    size = len + sizeof(ngx_http_rooms_deflate_tail);

    if (ngx_http_rooms_scratch_size < size) {
        ngx_free(ngx_http_rooms_scratch);
        ngx_http_rooms_scratch_size = 0;

        ngx_http_rooms_scratch = ngx_alloc(size, log);
        if (ngx_http_rooms_scratch == NULL) {
            return NULL;
        }

        ngx_http_rooms_scratch_size = size;
    }

    zs->next_in = payload;
    zs->avail_in = (uInt) len;
    zs->next_out = ngx_http_rooms_scratch;
    zs->avail_out = (uInt) size;

    rc = deflate(zs, Z_SYNC_FLUSH);

    frame = NULL;

    if ((rc != Z_OK && rc != Z_BUF_ERROR) || zs->avail_in != 0
        || zs->avail_out == 0)
    {
        /* no gain: the output did not even fit the payload's size */
        goto done;
    }

    n = size - zs->avail_out;

    if (n < sizeof(ngx_http_rooms_deflate_tail)
        || ngx_memcmp(ngx_http_rooms_scratch + n
                      - sizeof(ngx_http_rooms_deflate_tail),
                      ngx_http_rooms_deflate_tail,
                      sizeof(ngx_http_rooms_deflate_tail))
           != 0)
    {
        goto done;
    }

    /* RFC 7692 7.2.1: the empty block's 00 00 ff ff is not sent */

    n -= sizeof(ngx_http_rooms_deflate_tail);

    if (n >= len) {
        goto done;
    }

    frame = ngx_alloc(sizeof(ngx_http_rooms_frame_t)
                      + NGX_ROOMS_WS_HEADER_MAX + n, log);
    if (frame == NULL) {
        goto done;
    }

    h = ngx_rooms_ws_frame_header(frame->data,
                                  NGX_ROOMS_WS_OP_TEXT | NGX_ROOMS_WS_RSV1,
                                  n);
    ngx_memcpy(frame->data + h, ngx_http_rooms_scratch, n);

    frame->refs = 0;
    frame->len = h + n;

done:

    if (ngx_http_rooms_scratch_size > NGX_HTTP_ROOMS_DEFLATE_KEEP) {
        ngx_free(ngx_http_rooms_scratch);
        ngx_http_rooms_scratch = NULL;
        ngx_http_rooms_memory_freed(ngx_http_rooms_scratch_size);
        ngx_http_rooms_scratch_size = 0;
    }

    return frame;
}


/*
 * Inflates a compressed message of a client into *out (ngx_alloc()ed,
 * the caller frees it), never more than max bytes.  Returns 0, or the
 * status to close with and *reason: 1009 past max (a decompression bomb
 * stops there), 1007 for data that is not DEFLATE or not UTF-8 once
 * inflated, 1011 when zlib has no memory.
 */

ngx_uint_t
ngx_http_rooms_inflate(u_char *in, size_t len, size_t max, u_char **out,
    size_t *out_len, char **reason, ngx_log_t *log)
{
    int         rc;
    u_char     *buf, *nbuf, probe;
    size_t      size, total;
    z_stream   *zs;
    ngx_uint_t  tail, probing;

    zs = &ngx_http_rooms_zin;

    *out = NULL;
    *out_len = 0;
    *reason = "inflate failed";

    if (!ngx_http_rooms_zin_init) {
        ngx_memzero(zs, sizeof(z_stream));

        rc = inflateInit2(zs, -MAX_WBITS);
        if (rc != Z_OK) {
            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "rooms: inflateInit2() failed: %d", rc);
            return NGX_ROOMS_WS_CLOSE_INTERNAL;
        }

        ngx_http_rooms_zin_init = 1;

    } else if (inflateReset(zs) != Z_OK) {
        return NGX_ROOMS_WS_CLOSE_INTERNAL;
    }

    /* a first guess at the size, grown twofold up to the limit */

    size = (len < 256) ? 1024 : 4 * len;

    if (size > max) {
        size = max;
    }

    buf = ngx_alloc(size ? size : 1, log);
    if (buf == NULL) {
        return NGX_ROOMS_WS_CLOSE_INTERNAL;
    }

    zs->next_in = in;
    zs->avail_in = (uInt) len;
    total = 0;
    tail = 0;
    probing = 0;

    for ( ;; ) {

        if (total == size) {

            if (size == max) {

                /* full: one more byte of output would be over the limit */

                probing = 1;
                zs->next_out = &probe;
                zs->avail_out = 1;

            } else {
                size = (size > max / 2) ? max : 2 * size;

                nbuf = ngx_alloc(size, log);
                if (nbuf == NULL) {
                    ngx_free(buf);
                    return NGX_ROOMS_WS_CLOSE_INTERNAL;
                }

                ngx_memcpy(nbuf, buf, total);
                ngx_free(buf);
                buf = nbuf;
            }
        }

        if (!probing) {
            zs->next_out = buf + total;
            zs->avail_out = (uInt) (size - total);
        }

        rc = inflate(zs, Z_SYNC_FLUSH);

        if (probing) {
            if (zs->avail_out == 0) {
                ngx_free(buf);
                *reason = "inflated message too big";
                return NGX_ROOMS_WS_CLOSE_TOO_BIG;
            }

        } else {
            total = size - zs->avail_out;
        }

        if (rc == Z_STREAM_END) {
            /* a final block: the message ends there */
            break;
        }

        if (rc == Z_MEM_ERROR) {
            ngx_free(buf);
            return NGX_ROOMS_WS_CLOSE_INTERNAL;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            ngx_free(buf);
            *reason = "invalid compressed data";
            return NGX_ROOMS_WS_CLOSE_INVALID_DATA;
        }

        if (zs->avail_in) {

            if (zs->avail_out) {
                /* no progress with input and room left: cannot be */
                ngx_free(buf);
                *reason = "invalid compressed data";
                return NGX_ROOMS_WS_CLOSE_INVALID_DATA;
            }

            continue;
        }

        if (!tail) {

            /* RFC 7692 7.2.2: the sender stripped 00 00 ff ff */

            tail = 1;
            zs->next_in = ngx_http_rooms_deflate_tail;
            zs->avail_in = sizeof(ngx_http_rooms_deflate_tail);
            continue;
        }

        if (zs->avail_out) {
            /* all input taken, room left: all output is out */
            break;
        }
    }

    if (ngx_rooms_utf8_valid(buf, total) != NGX_ROOMS_UTF8_OK) {
        ngx_free(buf);
        *reason = "invalid UTF-8 in text";
        return NGX_ROOMS_WS_CLOSE_INVALID_DATA;
    }

    *out = buf;
    *out_len = total;

    return 0;
}


void
ngx_http_rooms_deflate_exit(void)
{
    if (ngx_http_rooms_zout_init) {
        (void) deflateEnd(&ngx_http_rooms_zout);
        ngx_http_rooms_zout_init = 0;
    }

    if (ngx_http_rooms_zin_init) {
        (void) inflateEnd(&ngx_http_rooms_zin);
        ngx_http_rooms_zin_init = 0;
    }

    ngx_free(ngx_http_rooms_scratch);
    ngx_http_rooms_scratch = NULL;
    ngx_http_rooms_scratch_size = 0;
}
