
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
 * Outside a WebSocket request the variables are not found ("-").
 */


static ngx_int_t ngx_http_rooms_variable_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_player(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_session_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_counter(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_bytes_out(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_rooms_variable_close_code(ngx_http_request_t *r,
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

    { ngx_string("rooms_session_time"), NULL,
      ngx_http_rooms_variable_session_time, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rooms_messages_in"), NULL, ngx_http_rooms_variable_counter,
      offsetof(ngx_http_rooms_conn_t, messages_in), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("rooms_messages_out"), NULL,
      ngx_http_rooms_variable_counter,
      offsetof(ngx_http_rooms_conn_t, messages_out), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("rooms_bytes_in"), NULL, ngx_http_rooms_variable_counter,
      offsetof(ngx_http_rooms_conn_t, bytes_in), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

    { ngx_string("rooms_bytes_out"), NULL, ngx_http_rooms_variable_bytes_out,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rooms_close_code"), NULL,
      ngx_http_rooms_variable_close_code, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_rooms_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_rooms_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
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


/* seconds since the 101, with milliseconds, as $request_time */

static ngx_int_t
ngx_http_rooms_variable_session_time(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_msec_t              ms;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_TIME_T_LEN + 4);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ms = ngx_current_msec - conn->start;

    v->len = ngx_sprintf(p, "%T.%03M", (time_t) (ms / 1000), ms % 1000) - p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_variable_counter(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%uL", *(uint64_t *) ((char *) conn + data)) - p;

    return NGX_OK;
}


/* what was written after the 101 response: frames, headers included */

static ngx_int_t
ngx_http_rooms_variable_bytes_out(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    off_t                   sent;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_OFF_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sent = conn->connection->sent - conn->head_sent;

    v->len = ngx_sprintf(p, "%O", sent > 0 ? sent : (off_t) 0) - p;

    return NGX_OK;
}


/*
 * The status of the closing handshake: the client's when it closed first
 * (1005 for a close frame without one), else the one the server sent;
 * 1006 when the connection ended without a close frame.  Not found while
 * the WebSocket is open.
 */

static ngx_int_t
ngx_http_rooms_variable_close_code(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    ngx_http_rooms_conn_t  *conn;

    conn = ngx_http_rooms_variable_conn(r, v);
    if (conn == NULL) {
        return NGX_OK;
    }

    if (conn->close_code == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    p = ngx_http_rooms_variable_alloc(r, v, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_sprintf(p, "%ui", conn->close_code) - p;

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
