
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_module.h"


/*
 * The $rooms_* variables: what a WebSocket did, for log_format.  The
 * access log line of a WebSocket is written when it closes (see
 * ngx_http_rooms_conn_takeover()), so the counters are final there.
 * Outside a WebSocket request the variables are not found ("-").  The
 * values known only at the close are rendered by
 * ngx_http_rooms_close_value(), for rooms_access_log too.
 */


static ngx_int_t ngx_http_rooms_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_player(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_close(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_http_rooms_conn_t *ngx_http_rooms_variable_conn(
    ngx_http_request_t *r, ngx_http_variable_value_t *v);
static u_char *ngx_http_rooms_variable_alloc(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, size_t size);


static ngx_http_variable_t  ngx_http_rooms_vars[] = {

    { ngx_string("rooms_room"), NULL, ngx_http_rooms_variable_str,
      offsetof(ngx_http_rooms_conn_t, room_code), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("rooms_name"), NULL, ngx_http_rooms_variable_str,
      offsetof(ngx_http_rooms_conn_t, name), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rooms_player_id"), NULL, ngx_http_rooms_variable_player,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * By NGX_HTTP_ROOMS_V_*: the variables rooms_access_log fills at the
 * close; those before $time_local are ours (ngx_http_rooms_variable_close()).
 */

static ngx_str_t  ngx_http_rooms_close_names[] = {
    ngx_string("rooms_session_time"),
    ngx_string("rooms_messages_in"),
    ngx_string("rooms_messages_out"),
    ngx_string("rooms_bytes_in"),
    ngx_string("rooms_bytes_out"),
    ngx_string("rooms_close_code"),
    ngx_string("time_local"),
    ngx_string("time_iso8601"),
    ngx_string("msec"),
    ngx_string("bytes_sent"),
    ngx_null_string
};


ngx_int_t
ngx_http_rooms_add_variables(ngx_conf_t *cf)
{
    ngx_uint_t            i;
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_rooms_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    for (i = 0; i < NGX_HTTP_ROOMS_V_TIME_LOCAL; i++) {
        var = ngx_http_add_variable(cf, &ngx_http_rooms_close_names[i],
                                    NGX_HTTP_VAR_NOCACHEABLE);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = ngx_http_rooms_variable_close;
        var->data = i;
    }

    return NGX_OK;
}


/* NGX_HTTP_ROOMS_V_* of a variable known only at the close, or declined */

ngx_int_t
ngx_http_rooms_close_variable(ngx_str_t *name)
{
    ngx_uint_t  i;

    for (i = 0; ngx_http_rooms_close_names[i].len; i++) {
        if (name->len == ngx_http_rooms_close_names[i].len
            && ngx_strncmp(name->data, ngx_http_rooms_close_names[i].data,
                           name->len)
               == 0)
        {
            return i;
        }
    }

    return NGX_DECLINED;
}


/*
 * Writes one of the values known at the close, at most
 * NGX_HTTP_ROOMS_V_LEN bytes; NULL if it is not found (no close code
 * while the WebSocket is open).
 */

u_char *
ngx_http_rooms_close_value(ngx_http_rooms_conn_t *conn, ngx_uint_t value,
    u_char *buf)
{
    off_t        sent;
    ngx_msec_t   ms;
    ngx_time_t  *tp;

    switch (value) {

    case NGX_HTTP_ROOMS_V_SESSION_TIME:

        /* seconds since the 101, with milliseconds, as $request_time */

        ms = ngx_current_msec - conn->start;

        return ngx_sprintf(buf, "%T.%03M", (time_t) (ms / 1000), ms % 1000);

    case NGX_HTTP_ROOMS_V_MESSAGES_IN:
        return ngx_sprintf(buf, "%uL", conn->messages_in);

    case NGX_HTTP_ROOMS_V_MESSAGES_OUT:
        return ngx_sprintf(buf, "%uL", conn->messages_out);

    case NGX_HTTP_ROOMS_V_BYTES_IN:
        return ngx_sprintf(buf, "%uL", conn->bytes_in);

    case NGX_HTTP_ROOMS_V_BYTES_OUT:

        /* what was written after the 101 response: frames, headers included */

        sent = conn->connection->sent - conn->head_sent;

        return ngx_sprintf(buf, "%O", sent > 0 ? sent : (off_t) 0);

    case NGX_HTTP_ROOMS_V_CLOSE_CODE:

        /*
         * The status of the closing handshake: the client's when it
         * closed first (1005 for a close frame without one), else the
         * one the server sent; 1006 when the connection ended without a
         * close frame.
         */

        if (conn->close_code == 0) {
            return NULL;
        }

        return ngx_sprintf(buf, "%ui", conn->close_code);

    case NGX_HTTP_ROOMS_V_TIME_LOCAL:
        return ngx_cpymem(buf, ngx_cached_http_log_time.data,
                          ngx_cached_http_log_time.len);

    case NGX_HTTP_ROOMS_V_TIME_ISO8601:
        return ngx_cpymem(buf, ngx_cached_http_log_iso8601.data,
                          ngx_cached_http_log_iso8601.len);

    case NGX_HTTP_ROOMS_V_MSEC:
        tp = ngx_timeofday();

        return ngx_sprintf(buf, "%T.%03M", tp->sec, tp->msec);

    default: /* NGX_HTTP_ROOMS_V_BYTES_SENT */
        return ngx_sprintf(buf, "%O", conn->connection->sent);
    }
}


static ngx_int_t
ngx_http_rooms_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t              *s;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    s = (ngx_str_t *) ((char *) conn + data);

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_variable_player(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_HTTP_ROOMS_PLAYER_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_http_rooms_link_player(conn, p) - p;

    return NGX_OK;
}


/* the counters, the session time, the close code: what they are by now */

static ngx_int_t
ngx_http_rooms_variable_close(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p, *last;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_HTTP_ROOMS_V_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_http_rooms_close_value(conn, data, p);

    if (last == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = last - p;

    return NGX_OK;
}


static ngx_http_rooms_conn_t *
ngx_http_rooms_variable_conn(ngx_http_request_t *r,
    ngx_http_variable_value_t *v)
{
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_get_module_ctx(r->main, ngx_http_rooms_module);

    if (conn == NULL) {
        v->not_found = 1;
    }

    return conn;
}


/* room for a value of at most size bytes; the caller sets v->len */

static u_char *
ngx_http_rooms_variable_alloc(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, size_t size)
{
    v->data = ngx_pnalloc(r->pool, size);
    if (v->data == NULL) {
        return NULL;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return v->data;
}
