
/*
 * Copyright (C) ngx_rooms developers
 */


#include <string.h>

#include "ngx_http_rooms_ext.h"


/*
 * The header grammar (RFC 6455 9.1, RFC 7230 3.2.6):
 *
 *   extension-list = 1#extension
 *   extension      = token *( OWS ";" OWS param )
 *   param          = token [ OWS "=" OWS ( token / quoted-string ) ]
 *
 * A quoted value must be a token once unquoted (RFC 6455 9.1).
 */

#define NGX_ROOMS_EXT_VALUE_MAX  8       /* longer values are invalid here */

#define NGX_ROOMS_EXT_SERVER_NCT  0x01
#define NGX_ROOMS_EXT_CLIENT_NCT  0x02
#define NGX_ROOMS_EXT_SERVER_MWB  0x04
#define NGX_ROOMS_EXT_CLIENT_MWB  0x08


typedef struct {
    const uint8_t  *pos;
    const uint8_t  *last;
} ngx_rooms_ext_cursor_t;


static void ngx_rooms_ext_ows(ngx_rooms_ext_cursor_t *c);
static size_t ngx_rooms_ext_token(ngx_rooms_ext_cursor_t *c);
static int ngx_rooms_ext_value(ngx_rooms_ext_cursor_t *c, uint8_t *buf,
    size_t *len);
static int ngx_rooms_ext_is(const uint8_t *s, size_t len, const char *name);
static unsigned ngx_rooms_ext_window_bits(const uint8_t *s, size_t len);


int
ngx_rooms_ws_deflate_negotiate(const uint8_t *value, size_t len,
    ngx_rooms_ws_deflate_offer_t *offer)
{
    int                     ok, has_value;
    size_t                  n, vlen;
    uint8_t                 v[NGX_ROOMS_EXT_VALUE_MAX];
    unsigned                seen, bit, bits, server_bits;
    const uint8_t          *name;
    ngx_rooms_ext_cursor_t  c;

    c.pos = value;
    c.last = value + len;

    for ( ;; ) {

        ngx_rooms_ext_ows(&c);

        if (c.pos == c.last) {
            return 0;
        }

        if (*c.pos == ',') {
            /* empty list elements are allowed, RFC 7230 7 */
            c.pos++;
            continue;
        }

        name = c.pos;
        n = ngx_rooms_ext_token(&c);

        if (n == 0) {
            return 0;
        }

        ok = ngx_rooms_ext_is(name, n, "permessage-deflate");
        seen = 0;
        server_bits = 0;

        for ( ;; ) {

            ngx_rooms_ext_ows(&c);

            if (c.pos == c.last || *c.pos == ',') {
                break;
            }

            if (*c.pos != ';') {
                return 0;
            }

            c.pos++;
            ngx_rooms_ext_ows(&c);

            name = c.pos;
            n = ngx_rooms_ext_token(&c);

            if (n == 0) {
                return 0;
            }

            ngx_rooms_ext_ows(&c);

            has_value = 0;
            vlen = 0;

            if (c.pos < c.last && *c.pos == '=') {
                c.pos++;
                ngx_rooms_ext_ows(&c);

                if (ngx_rooms_ext_value(&c, v, &vlen) != 0) {
                    return 0;
                }

                has_value = 1;
            }

            if (!ok) {
                continue;
            }

            bits = has_value ? ngx_rooms_ext_window_bits(v, vlen) : 0;

            if (ngx_rooms_ext_is(name, n, "server_no_context_takeover")) {
                bit = NGX_ROOMS_EXT_SERVER_NCT;
                ok = !has_value;

            } else if (ngx_rooms_ext_is(name, n,
                                        "client_no_context_takeover"))
            {
                bit = NGX_ROOMS_EXT_CLIENT_NCT;
                ok = !has_value;

            } else if (ngx_rooms_ext_is(name, n, "server_max_window_bits")) {
                bit = NGX_ROOMS_EXT_SERVER_MWB;
                ok = (bits != 0);
                server_bits = bits;

            } else if (ngx_rooms_ext_is(name, n, "client_max_window_bits")) {

                /* any window of the client's: we inflate with 15 bits */

                bit = NGX_ROOMS_EXT_CLIENT_MWB;
                ok = (!has_value || bits != 0);

            } else {
                bit = 0;
                ok = 0;
            }

            if (seen & bit) {
                ok = 0;     /* a parameter given twice, RFC 7692 7 */
            }

            seen |= bit;
        }

        if (ok) {
            offer->server_max_window_bits = server_bits;
            return 1;
        }

        /* the next offer, if any */

        if (c.pos < c.last) {
            c.pos++;
        }
    }
}


size_t
ngx_rooms_ws_deflate_response(uint8_t *buf,
    const ngx_rooms_ws_deflate_offer_t *offer)
{
    size_t       n;
    unsigned     bits;
    static char  resp[] = "permessage-deflate; server_no_context_takeover; "
                          "client_no_context_takeover";
    static char  mwb[] = "; server_max_window_bits=";

    n = sizeof(resp) - 1;
    memcpy(buf, resp, n);

    bits = offer->server_max_window_bits;

    if (bits) {
        memcpy(buf + n, mwb, sizeof(mwb) - 1);
        n += sizeof(mwb) - 1;

        if (bits >= 10) {
            buf[n++] = (uint8_t) ('0' + bits / 10);
        }

        buf[n++] = (uint8_t) ('0' + bits % 10);
    }

    return n;
}


static void
ngx_rooms_ext_ows(ngx_rooms_ext_cursor_t *c)
{
    while (c->pos < c->last && (*c->pos == ' ' || *c->pos == '\t')) {
        c->pos++;
    }
}


static size_t
ngx_rooms_ext_token(ngx_rooms_ext_cursor_t *c)
{
    uint8_t         ch;
    const uint8_t  *start;

    start = c->pos;

    while (c->pos < c->last) {
        ch = *c->pos;

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9')
              || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL)))
        {
            break;
        }

        c->pos++;
    }

    return (size_t) (c->pos - start);
}


/*
 * A token or a quoted string; up to NGX_ROOMS_EXT_VALUE_MAX bytes of it
 * are unquoted to buf, *len is its full length.  Returns -1 on a syntax
 * error.
 */

static int
ngx_rooms_ext_value(ngx_rooms_ext_cursor_t *c, uint8_t *buf, size_t *len)
{
    size_t          n;
    uint8_t         ch;
    const uint8_t  *start;

    if (c->pos < c->last && *c->pos != '"') {
        start = c->pos;
        n = ngx_rooms_ext_token(c);

        if (n == 0) {
            return -1;
        }

        memcpy(buf, start, n < NGX_ROOMS_EXT_VALUE_MAX
                           ? n : NGX_ROOMS_EXT_VALUE_MAX);
        *len = n;

        return 0;
    }

    if (c->pos == c->last) {
        return -1;
    }

    c->pos++;   /* the opening quote */
    n = 0;

    while (c->pos < c->last) {
        ch = *c->pos++;

        if (ch == '"') {
            *len = n;
            return 0;
        }

        if (ch == '\\') {
            if (c->pos == c->last) {
                return -1;
            }

            ch = *c->pos++;
        }

        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return -1;
        }

        if (n < NGX_ROOMS_EXT_VALUE_MAX) {
            buf[n] = ch;
        }

        n++;
    }

    return -1;  /* no closing quote */
}


static int
ngx_rooms_ext_is(const uint8_t *s, size_t len, const char *name)
{
    size_t   i;
    uint8_t  ch;

    if (len != strlen(name)) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        ch = s[i];

        if (ch >= 'A' && ch <= 'Z') {
            ch = (uint8_t) (ch | 0x20);
        }

        if (ch != (uint8_t) name[i]) {
            return 0;
        }
    }

    return 1;
}


/* "8" to "15", no leading zero (RFC 7692 7.1.2); 0 if invalid */

static unsigned
ngx_rooms_ext_window_bits(const uint8_t *s, size_t len)
{
    unsigned  bits;

    if (len == 1 && s[0] >= '8' && s[0] <= '9') {
        return s[0] - '0';
    }

    if (len == 2 && s[0] == '1' && s[1] >= '0' && s[1] <= '5') {
        bits = 10 + (s[1] - '0');
        return bits;
    }

    return 0;
}
