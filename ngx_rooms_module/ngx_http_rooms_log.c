
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_module.h"


/*
 * rooms_access_log: a WebSocket's line written at its close, without
 * keeping its request until then.  At the upgrade, the variables known
 * by then are evaluated and the line rendered with a slot for each value
 * known only at the close (ngx_http_rooms_close_value()); the request is
 * then freed as with "rooms_log_at upgrade".  At the close, the slots are
 * filled and the line written with one write().
 *
 * The rendered line is one allocation, held by the connection:
 *
 *     uint32_t  at[slots + 1];   where each slot goes in the text, and
 *                                the length of the text
 *     u_char    text[at[slots]];
 */


#define NGX_HTTP_ROOMS_LOG_TEXT      0
#define NGX_HTTP_ROOMS_LOG_VARIABLE  1
#define NGX_HTTP_ROOMS_LOG_CLOSE_V   2


typedef struct {
    ngx_uint_t                     type;
    ngx_str_t                      text;        /* NGX_HTTP_ROOMS_LOG_TEXT */
    ngx_int_t                      index;       /* of the variable or
                                                   NGX_HTTP_ROOMS_V_* */
} ngx_http_rooms_log_op_t;


struct ngx_http_rooms_log_s {
    ngx_open_file_t               *file;
    ngx_array_t                    ops;         /* ngx_http_rooms_log_op_t */
    ngx_uint_t                     slots;       /* values of the close */
    ngx_uint_t                     failed;      /* a write error logged */
};


static char *ngx_http_rooms_log_compile(ngx_conf_t *cf,
    ngx_http_rooms_log_t *log, ngx_str_t *s);
static ngx_http_rooms_log_op_t *ngx_http_rooms_log_add(ngx_conf_t *cf,
    ngx_http_rooms_log_t *log, ngx_uint_t type);
static uintptr_t ngx_http_rooms_log_escape(u_char *dst, u_char *src,
    size_t size);
static void ngx_http_rooms_log_write(ngx_http_rooms_log_t *log,
    ngx_log_t *error_log, u_char *buf, size_t len);


/*
 * rooms_access_log path format ... | off: the format's strings are
 * joined, as log_format's are.
 */

char *
ngx_http_rooms_access_log(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rooms_loc_conf_t *rlcf = conf;

    ngx_str_t             *value;
    ngx_uint_t             i;
    ngx_http_rooms_log_t  *log;

    if (rlcf->access_log != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {

        if (cf->args->nelts != 2) {
            return "takes no format with \"off\"";
        }

        rlcf->access_log = NULL;
        return NGX_CONF_OK;
    }

    if (cf->args->nelts < 3) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_access_log\" needs a format after "
                           "the path \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    log = ngx_pcalloc(cf->pool, sizeof(ngx_http_rooms_log_t));
    if (log == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&log->ops, cf->pool, 8,
                       sizeof(ngx_http_rooms_log_op_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* opened by the master, reopened on "nginx -s reopen" as any log */

    log->file = ngx_conf_open_file(cf->cycle, &value[1]);
    if (log->file == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (ngx_http_rooms_log_compile(cf, log, &value[i]) != NGX_CONF_OK) {
            return NGX_CONF_ERROR;
        }
    }

    rlcf->access_log = log;

    return NGX_CONF_OK;
}


/* "$name" and "${name}" are variables, the rest is written as it is */

static char *
ngx_http_rooms_log_compile(ngx_conf_t *cf, ngx_http_rooms_log_t *log,
    ngx_str_t *s)
{
    u_char                   *p, *last, *start;
    ngx_int_t                 v;
    ngx_str_t                 name;
    ngx_uint_t                bracket;
    ngx_http_rooms_log_op_t  *op;

    p = s->data;
    last = s->data + s->len;

    while (p < last) {

        if (*p != '$') {
            start = p;

            while (p < last && *p != '$') {
                p++;
            }

            op = ngx_http_rooms_log_add(cf, log, NGX_HTTP_ROOMS_LOG_TEXT);
            if (op == NULL) {
                return NGX_CONF_ERROR;
            }

            op->text.data = start;
            op->text.len = p - start;

            continue;
        }

        p++;

        bracket = (p < last && *p == '{');

        if (bracket) {
            p++;
        }

        start = p;

        while (p < last
               && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                   || (*p >= '0' && *p <= '9') || *p == '_'))
        {
            p++;
        }

        name.data = start;
        name.len = p - start;

        if (name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid variable name in \"%V\"", s);
            return NGX_CONF_ERROR;
        }

        if (bracket) {
            if (p == last || *p != '}') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "the closing bracket in \"%V\" "
                                   "variable is missing", &name);
                return NGX_CONF_ERROR;
            }

            p++;
        }

        v = ngx_http_rooms_close_variable(&name);

        if (v != NGX_DECLINED) {
            op = ngx_http_rooms_log_add(cf, log, NGX_HTTP_ROOMS_LOG_CLOSE_V);
            if (op == NULL) {
                return NGX_CONF_ERROR;
            }

            op->index = v;
            log->slots++;

            continue;
        }

        op = ngx_http_rooms_log_add(cf, log, NGX_HTTP_ROOMS_LOG_VARIABLE);
        if (op == NULL) {
            return NGX_CONF_ERROR;
        }

        op->index = ngx_http_get_variable_index(cf, &name);
        if (op->index == NGX_ERROR) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_http_rooms_log_op_t *
ngx_http_rooms_log_add(ngx_conf_t *cf, ngx_http_rooms_log_t *log,
    ngx_uint_t type)
{
    ngx_http_rooms_log_op_t  *op;

    op = ngx_array_push(&log->ops);
    if (op == NULL) {
        return NULL;
    }

    ngx_memzero(op, sizeof(ngx_http_rooms_log_op_t));
    op->type = type;

    return op;
}


/*
 * At the upgrade, before the request is freed: every variable not of the
 * close is evaluated, escaped as nginx's log escapes by default, "-" when
 * not found.  A line that cannot be rendered is lost, not the client.
 */

ngx_int_t
ngx_http_rooms_log_upgrade(ngx_http_request_t *r, ngx_http_rooms_conn_t *conn)
{
    u_char                      *line, *text, *p;
    size_t                       len;
    uint32_t                    *at;
    ngx_uint_t                   i, slot;
    ngx_http_rooms_log_t        *log;
    ngx_http_rooms_log_op_t     *op;
    ngx_http_variable_value_t  **vv;

    log = conn->conf->access_log;

    if (log == NULL) {
        return NGX_OK;
    }

    op = log->ops.elts;

    vv = ngx_pcalloc(r->pool,
                     log->ops.nelts * sizeof(ngx_http_variable_value_t *));
    if (vv == NULL) {
        return NGX_ERROR;
    }

    len = 0;

    for (i = 0; i < log->ops.nelts; i++) {

        switch (op[i].type) {

        case NGX_HTTP_ROOMS_LOG_TEXT:
            len += op[i].text.len;
            break;

        case NGX_HTTP_ROOMS_LOG_VARIABLE:
            vv[i] = ngx_http_get_indexed_variable(r, op[i].index);

            if (vv[i] == NULL || vv[i]->not_found) {
                len += 1;

            } else {
                len += vv[i]->len
                       + 3 * ngx_http_rooms_log_escape(NULL, vv[i]->data,
                                                       vv[i]->len);
            }

            break;

        default: /* NGX_HTTP_ROOMS_LOG_CLOSE_V */
            break;
        }
    }

    line = ngx_alloc((log->slots + 1) * sizeof(uint32_t) + len,
                     r->connection->log);
    if (line == NULL) {
        return NGX_ERROR;
    }

    at = (uint32_t *) line;
    text = line + (log->slots + 1) * sizeof(uint32_t);
    p = text;
    slot = 0;

    for (i = 0; i < log->ops.nelts; i++) {

        switch (op[i].type) {

        case NGX_HTTP_ROOMS_LOG_TEXT:
            p = ngx_cpymem(p, op[i].text.data, op[i].text.len);
            break;

        case NGX_HTTP_ROOMS_LOG_VARIABLE:

            if (vv[i] == NULL || vv[i]->not_found) {
                *p++ = '-';

            } else {
                p = (u_char *) ngx_http_rooms_log_escape(p, vv[i]->data,
                                                         vv[i]->len);
            }

            break;

        default: /* NGX_HTTP_ROOMS_LOG_CLOSE_V */
            at[slot++] = p - text;
            break;
        }
    }

    at[slot] = len;

    conn->log_line = line;

    return NGX_OK;
}


/*
 * As nginx's default log escaping: '"', '\' and the bytes that are not
 * printable ASCII as \xXX.  Without dst, counts them.
 */

static uintptr_t
ngx_http_rooms_log_escape(u_char *dst, u_char *src, size_t size)
{
    u_char      c;
    ngx_uint_t  n;

    static u_char  hex[] = "0123456789ABCDEF";

    if (dst == NULL) {
        n = 0;

        while (size--) {
            c = *src++;

            if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
                n++;
            }
        }

        return (uintptr_t) n;
    }

    while (size--) {
        c = *src++;

        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            *dst++ = '\\';
            *dst++ = 'x';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];

        } else {
            *dst++ = c;
        }
    }

    return (uintptr_t) dst;
}


/* at the close: the slots filled, the line written, its memory freed */

void
ngx_http_rooms_log_close(ngx_http_rooms_conn_t *conn)
{
    u_char                   *line, *text, *buf, *p, *v;
    size_t                    size, from;
    uint32_t                 *at;
    ngx_uint_t                i, slot;
    ngx_http_rooms_log_t     *log;
    ngx_http_rooms_log_op_t  *op;

    line = conn->log_line;

    if (line == NULL) {
        return;
    }

    conn->log_line = NULL;

    log = conn->conf->access_log;
    op = log->ops.elts;

    at = (uint32_t *) line;
    text = line + (log->slots + 1) * sizeof(uint32_t);

    size = at[log->slots] + log->slots * NGX_HTTP_ROOMS_V_LEN + 1;

    buf = ngx_alloc(size, conn->connection->log);
    if (buf == NULL) {
        ngx_free(line);
        return;
    }

    p = buf;
    from = 0;
    slot = 0;

    for (i = 0; i < log->ops.nelts; i++) {

        if (op[i].type != NGX_HTTP_ROOMS_LOG_CLOSE_V) {
            continue;
        }

        p = ngx_cpymem(p, text + from, at[slot] - from);
        from = at[slot++];

        v = ngx_http_rooms_close_value(conn, op[i].index, p);

        if (v == NULL) {
            *p++ = '-';

        } else {
            p = v;
        }
    }

    p = ngx_cpymem(p, text + from, at[slot] - from);
    *p++ = LF;

    ngx_http_rooms_log_write(log, conn->connection->log, buf, p - buf);

    ngx_free(buf);
    ngx_free(line);
}


/*
 * One write() per line, O_APPEND: lines of several workers do not mix.
 * A failure is logged once, and again only after a line got through.
 */

static void
ngx_http_rooms_log_write(ngx_http_rooms_log_t *log, ngx_log_t *error_log,
    u_char *buf, size_t len)
{
    ssize_t    n;
    ngx_err_t  err;

    n = ngx_write_fd(log->file->fd, buf, len);

    if (n == (ssize_t) len) {
        log->failed = 0;
        return;
    }

    if (log->failed) {
        return;
    }

    log->failed = 1;

    if (n == -1) {
        err = ngx_errno;

        ngx_log_error(NGX_LOG_ALERT, error_log, err,
                      ngx_write_fd_n " to \"%V\" failed (rooms_access_log)",
                      &log->file->name);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, error_log, 0,
                  ngx_write_fd_n " to \"%V\" was incomplete: %z of %uz "
                  "(rooms_access_log)", &log->file->name, n, len);
}
