
/*
 * Copyright (C) ngx_rooms developers
 */


#include <string.h>

#include "ngx_http_rooms_json.h"


/* as the sidecar's envelope rules: 64 levels, the top-level object's
 * included */
#define NGX_ROOMS_JSON_DEPTH  63


typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} ngx_rooms_json_t;


static void ngx_rooms_json_space(ngx_rooms_json_t *j);
static int ngx_rooms_json_string(ngx_rooms_json_t *j, uint8_t *out,
    size_t cap, size_t *out_len, int *ascii);
static int ngx_rooms_json_hex4(const uint8_t *p, unsigned *v);
static int ngx_rooms_json_skip(ngx_rooms_json_t *j);


int
ngx_rooms_json_ref(const uint8_t *p, size_t len, uint8_t *ref,
    size_t *ref_len)
{
    int               ascii, found, is_ref;
    size_t            i, klen, vlen;
    uint8_t           key[4], val[NGX_ROOMS_REF_MAX];
    ngx_rooms_json_t  j;

    j.p = p;
    j.end = p + len;
    found = 0;

    ngx_rooms_json_space(&j);

    if (j.p == j.end || *j.p++ != '{') {
        return 0;
    }

    ngx_rooms_json_space(&j);

    if (j.p < j.end && *j.p == '}') {
        return 0;
    }

    for ( ;; ) {

        ngx_rooms_json_space(&j);

        if (ngx_rooms_json_string(&j, key, sizeof(key), &klen, &ascii) != 0)
        {
            return 0;
        }

        is_ref = (klen == 3 && memcmp(key, "ref", 3) == 0);

        ngx_rooms_json_space(&j);

        if (j.p == j.end || *j.p++ != ':') {
            return 0;
        }

        ngx_rooms_json_space(&j);

        if (is_ref) {
            found = 0;

            if (j.p < j.end && *j.p == '"') {
                if (ngx_rooms_json_string(&j, val, sizeof(val), &vlen,
                                          &ascii)
                    == -1)
                {
                    return 0;
                }

                found = ascii && vlen >= 1 && vlen <= NGX_ROOMS_REF_MAX;

                for (i = 0; found && i < vlen; i++) {
                    if (val[i] < 0x20 || val[i] > 0x7e) {
                        found = 0;
                    }
                }

                if (found) {
                    memcpy(ref, val, vlen);
                    *ref_len = vlen;
                }

            } else if (ngx_rooms_json_skip(&j) != 0) {
                return 0;
            }

        } else if (ngx_rooms_json_skip(&j) != 0) {
            return 0;
        }

        ngx_rooms_json_space(&j);

        if (j.p == j.end) {
            return 0;
        }

        if (*j.p == ',') {
            j.p++;
            continue;
        }

        if (*j.p == '}') {
            return found;
        }

        return 0;
    }
}


uint8_t *
ngx_rooms_json_escape_ascii(uint8_t *dst, const uint8_t *src, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (src[i] == '"' || src[i] == '\\') {
            *dst++ = '\\';
        }

        *dst++ = src[i];
    }

    return dst;
}


static void
ngx_rooms_json_space(ngx_rooms_json_t *j)
{
    while (j->p < j->end
           && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n'
               || *j->p == '\r'))
    {
        j->p++;
    }
}


/*
 * Reads a string at j->p.  Its decoded value goes to out while it fits
 * (*out_len is the full decoded length, which may exceed cap); *ascii
 * tells whether every decoded character is ASCII.  Returns 0, or -1 if
 * the text is not a string.
 */

static int
ngx_rooms_json_string(ngx_rooms_json_t *j, uint8_t *out, size_t cap,
    size_t *out_len, int *ascii)
{
    uint8_t   c;
    size_t    n;
    unsigned  v;

    if (j->p == j->end || *j->p != '"') {
        return -1;
    }

    j->p++;
    n = 0;
    *ascii = 1;

    while (j->p < j->end) {

        c = *j->p++;

        if (c == '"') {
            *out_len = n;
            return 0;
        }

        if (c < 0x20) {
            return -1;
        }

        if (c == '\\') {
            if (j->p == j->end) {
                return -1;
            }

            c = *j->p++;

            switch (c) {
            case '"': case '\\': case '/':
                break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;

            case 'u':
                if (j->end - j->p < 4 || ngx_rooms_json_hex4(j->p, &v) != 0)
                {
                    return -1;
                }

                j->p += 4;

                if (v >= 0x80) {
                    /* a surrogate's second half is only more non-ASCII */
                    *ascii = 0;
                    c = '?';

                } else {
                    c = (uint8_t) v;
                }

                break;

            default:
                return -1;
            }

        } else if (c >= 0x80) {
            *ascii = 0;
        }

        if (n < cap) {
            out[n] = c;
        }

        n++;
    }

    return -1;
}


static int
ngx_rooms_json_hex4(const uint8_t *p, unsigned *v)
{
    int       i;
    unsigned  d;

    *v = 0;

    for (i = 0; i < 4; i++) {
        if (p[i] >= '0' && p[i] <= '9') {
            d = p[i] - '0';

        } else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f') {
            d = (p[i] | 0x20) - 'a' + 10;

        } else {
            return -1;
        }

        *v = *v << 4 | d;
    }

    return 0;
}


/*
 * Skips one value: a string, an object or array (brackets counted, up to
 * a depth), or a scalar up to the next delimiter.  Returns 0, or -1 on
 * text that cannot be a value.
 */

static int
ngx_rooms_json_skip(ngx_rooms_json_t *j)
{
    int       ascii;
    size_t    len;
    unsigned  depth;

    depth = 0;

    for ( ;; ) {

        if (j->p == j->end) {
            return -1;
        }

        switch (*j->p) {

        case '"':
            if (ngx_rooms_json_string(j, NULL, 0, &len, &ascii) != 0) {
                return -1;
            }

            break;

        case '{':
        case '[':
            if (++depth > NGX_ROOMS_JSON_DEPTH) {
                return -1;
            }

            j->p++;
            break;

        case '}':
        case ']':
            if (depth == 0) {
                return -1;
            }

            depth--;
            j->p++;
            break;

        case ',':
        case ':':
        case ' ': case '\t': case '\n': case '\r':
            if (depth == 0) {
                return -1;
            }

            j->p++;
            break;

        default:
            /* a number or a literal */
            while (j->p < j->end
                   && *j->p != ',' && *j->p != '}' && *j->p != ']'
                   && *j->p != ' ' && *j->p != '\t' && *j->p != '\n'
                   && *j->p != '\r' && *j->p != '"' && *j->p != ':'
                   && *j->p != '{' && *j->p != '[')
            {
                j->p++;
            }

            break;
        }

        if (depth == 0) {
            return 0;
        }
    }
}
