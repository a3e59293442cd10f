
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include "ngx_http_rooms_module.h"


#define NGX_HTTP_ROOMS_WS_GUID           "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NGX_HTTP_ROOMS_UPGRADE_REQUIRED  426
#define NGX_HTTP_ROOMS_LIST_TIMEOUT      5000


static ngx_int_t ngx_http_rooms_websocket_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_rooms_list_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_rooms_check_upgrade(ngx_http_request_t *r,
    ngx_str_t *key, char **reason);
static ngx_table_elt_t *ngx_http_rooms_find_header(ngx_http_request_t *r,
    char *name, size_t len);
static ngx_uint_t ngx_http_rooms_header_has_token(ngx_http_request_t *r,
    char *name, size_t len, char *token, size_t token_len);
static ngx_int_t ngx_http_rooms_get_value(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv, ngx_str_t *value);
static char *ngx_http_rooms_parse_room(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf, ngx_str_t *room);
static char *ngx_http_rooms_parse_name(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf, ngx_str_t *name);
static char *ngx_http_rooms_check_origin(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf);
static ngx_uint_t ngx_http_rooms_match_origin(ngx_str_t *pattern,
    ngx_str_t *origin);
static ngx_uint_t ngx_http_rooms_match_host(u_char *pattern, size_t plen,
    u_char *host, size_t hlen);
static char *ngx_http_rooms_parse_since(ngx_http_request_t *r,
    uint64_t *since, ngx_uint_t *has_since);
static ngx_int_t ngx_http_rooms_refuse(ngx_http_request_t *r,
    ngx_uint_t status, char *reason);
static ngx_int_t ngx_http_rooms_accept_key(ngx_http_request_t *r,
    ngx_str_t *key, ngx_str_t *accept);
static ngx_int_t ngx_http_rooms_negotiate_deflate(ngx_http_request_t *r,
    ngx_http_rooms_conn_t *conn, ngx_str_t *extensions);
static ngx_int_t ngx_http_rooms_add_header(ngx_http_request_t *r,
    char *name, size_t len, ngx_str_t *value);

static ngx_int_t ngx_http_rooms_log_handler(ngx_http_request_t *r);

static ngx_int_t ngx_http_rooms_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_rooms_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_rooms_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_rooms_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_rooms_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_rooms_sidecar(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rooms_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rooms_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_rooms_origin_valid(ngx_str_t *pattern);
static char *ngx_http_rooms_merge_source(ngx_conf_t *cf,
    ngx_http_complex_value_t **cv, ngx_http_complex_value_t *prev,
    char *dflt);
static ngx_int_t ngx_http_rooms_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_rooms_init_process(ngx_cycle_t *cycle);
static void ngx_http_rooms_exit_process(ngx_cycle_t *cycle);


static ngx_http_handler_pt  ngx_http_rooms_websocket_handler_pt =
    ngx_http_rooms_websocket_handler;
static ngx_http_handler_pt  ngx_http_rooms_list_handler_pt =
    ngx_http_rooms_list_handler;
static ngx_http_handler_pt  ngx_http_rooms_metrics_handler_pt =
    ngx_http_rooms_metrics_handler;


static ngx_conf_enum_t  ngx_http_rooms_log_at[] = {
    { ngx_string("close"), NGX_HTTP_ROOMS_LOG_CLOSE },
    { ngx_string("upgrade"), NGX_HTTP_ROOMS_LOG_UPGRADE },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_rooms_commands[] = {

    { ngx_string("rooms_sidecar"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_rooms_sidecar,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rooms_hold_time"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_rooms_main_conf_t, hold_time),
      NULL },

    { ngx_string("rooms_hold_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_rooms_main_conf_t, hold_size),
      NULL },

    { ngx_string("rooms_shutdown_spread"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_rooms_main_conf_t, shutdown_spread),
      NULL },

    { ngx_string("rooms_websocket"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_rooms_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_http_rooms_websocket_handler_pt },

    { ngx_string("rooms_list"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_rooms_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_http_rooms_list_handler_pt },

    { ngx_string("rooms_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_rooms_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      &ngx_http_rooms_metrics_handler_pt },

    { ngx_string("rooms_room"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, room),
      NULL },

    { ngx_string("rooms_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, name),
      NULL },

    { ngx_string("rooms_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_rooms_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, origins),
      NULL },

    { ngx_string("rooms_origin_required"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, origin_required),
      NULL },

    { ngx_string("rooms_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, ping_interval),
      NULL },

    { ngx_string("rooms_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, idle_timeout),
      NULL },

    { ngx_string("rooms_max_message_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, max_message_size),
      NULL },

    { ngx_string("rooms_output_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, output_queue_size),
      NULL },

    { ngx_string("rooms_log_at"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, log_at),
      &ngx_http_rooms_log_at },

    { ngx_string("rooms_access_log"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_rooms_access_log,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rooms_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rooms_loc_conf_t, deflate),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_rooms_module_ctx = {
    ngx_http_rooms_preconfiguration,       /* preconfiguration */
    ngx_http_rooms_postconfiguration,      /* postconfiguration */

    ngx_http_rooms_create_main_conf,       /* create main configuration */
    ngx_http_rooms_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_rooms_create_loc_conf,        /* create location configuration */
    ngx_http_rooms_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_rooms_module = {
    NGX_MODULE_V1,
    &ngx_http_rooms_module_ctx,            /* module context */
    ngx_http_rooms_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_rooms_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_rooms_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_rooms_websocket_handler(ngx_http_request_t *r)
{
    char                       *reason;
    uint64_t                    since;
    ngx_int_t                   rc;
    ngx_str_t                   key, accept, room, name, extensions;
    ngx_uint_t                  has_since;
    ngx_http_rooms_conn_t      *conn;
    ngx_http_rooms_loc_conf_t  *rlcf;

    if (r != r->main) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_BAD_REQUEST,
                                     "WebSocket upgrade in a subrequest");
    }

    rc = ngx_http_rooms_check_upgrade(r, &key, &reason);
    if (rc != NGX_OK) {
        return ngx_http_rooms_refuse(r, rc, reason);
    }

    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_BAD_REQUEST,
                                     "WebSocket upgrade with a body");
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rooms_module);

    reason = ngx_http_rooms_check_origin(r, rlcf);
    if (reason != NULL) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_FORBIDDEN, reason);
    }

    /* set on every path: clang's -Wconditional-uninitialized (nginx's) */
    since = 0;
    has_since = 0;

    reason = ngx_http_rooms_parse_room(r, rlcf, &room);
    if (reason == NULL) {
        reason = ngx_http_rooms_parse_name(r, rlcf, &name);
    }

    if (reason == NULL) {
        reason = ngx_http_rooms_parse_since(r, &since, &has_since);
    }

    if (reason != NULL) {
        if (reason == NGX_CONF_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_rooms_refuse(r, NGX_HTTP_BAD_REQUEST, reason);
    }

    if (!ngx_http_rooms_link_up()) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "sidecar unavailable");
    }

    if (ngx_http_rooms_conn_drained()) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "worker shutting down");
    }

    if (ngx_http_rooms_accept_key(r, &key, &accept) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    conn = ngx_http_rooms_conn_create(r, &room, &name);
    if (conn == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    conn->since = since;
    conn->has_since = has_since;

    ngx_str_null(&extensions);

    if (rlcf->deflate
        && ngx_http_rooms_negotiate_deflate(r, conn, &extensions) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_rooms_conn_start(r, conn, &accept, &extensions);

    if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_rooms_refuse(r, rc, "sidecar unavailable");
    }

    return rc;
}


static ngx_int_t
ngx_http_rooms_check_upgrade(ngx_http_request_t *r, ngx_str_t *key,
    char **reason)
{
    u_char            buf[32];
    ngx_str_t         decoded;
    ngx_table_elt_t  *h;

    if (r->method != NGX_HTTP_GET) {
        *reason = "WebSocket upgrade needs GET";
        return NGX_HTTP_NOT_ALLOWED;
    }

    *reason = "not a WebSocket upgrade";

    if (r->http_version != NGX_HTTP_VERSION_11) {
        *reason = "WebSocket upgrade needs HTTP/1.1";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (!ngx_http_rooms_header_has_token(r, "Upgrade", sizeof("Upgrade") - 1,
                                         "websocket", sizeof("websocket") - 1))
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    if (!ngx_http_rooms_header_has_token(r, "Connection",
                                         sizeof("Connection") - 1,
                                         "upgrade", sizeof("upgrade") - 1))
    {
        *reason = "\"Connection: upgrade\" is missing";
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_http_rooms_find_header(r, "Sec-WebSocket-Version",
                                   sizeof("Sec-WebSocket-Version") - 1);

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        *reason = "only WebSocket version 13 is supported";
        return NGX_HTTP_ROOMS_UPGRADE_REQUIRED;
    }

    h = ngx_http_rooms_find_header(r, "Sec-WebSocket-Key",
                                   sizeof("Sec-WebSocket-Key") - 1);

    *reason = "bad Sec-WebSocket-Key";

    if (h == NULL || h->value.len != 24) {
        return NGX_HTTP_BAD_REQUEST;
    }

    decoded.data = buf;

    if (ngx_decode_base64(&decoded, &h->value) != NGX_OK
        || decoded.len != 16)
    {
        return NGX_HTTP_BAD_REQUEST;
    }

    *key = h->value;

    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_rooms_find_header(ngx_http_request_t *r, char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Looks for a token in the comma-separated values of every header line of
 * that name, case-insensitively: "Connection: keep-alive, Upgrade".
 */

static ngx_uint_t
ngx_http_rooms_header_has_token(ngx_http_request_t *r, char *name,
    size_t len, char *token, size_t token_len)
{
    u_char           *p, *last, *start;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != len
            || ngx_strncasecmp(h[i].key.data, (u_char *) name, len) != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {

            while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
                p++;
            }

            start = p;

            while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
                p++;
            }

            if ((size_t) (p - start) == token_len
                && ngx_strncasecmp(start, (u_char *) token, token_len) == 0)
            {
                return 1;
            }
        }
    }
}


/*
 * Evaluates a room or name source, percent-decoded ("+" is a space, as in
 * query strings) and trimmed of white space.
 */

static ngx_int_t
ngx_http_rooms_get_value(ngx_http_request_t *r, ngx_http_complex_value_t *cv,
    ngx_str_t *value)
{
    u_char     *src, *dst;
    ngx_str_t   raw;

    if (ngx_http_complex_value(r, cv, &raw) != NGX_OK) {
        return NGX_ERROR;
    }

    dst = ngx_pnalloc(r->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    /*
     * A query string's "+" is a space, "%2B" a plus: the "+"s are turned
     * into spaces before the percent-decoding, never after it.
     */

    for (src = raw.data; src < raw.data + raw.len; src++) {
        *dst++ = (*src == '+') ? ' ' : *src;
    }

    value->data = dst - raw.len;
    src = value->data;
    dst = value->data;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    value->len = dst - value->data;

    while (value->len
           && (value->data[0] == ' ' || value->data[0] == '\t'))
    {
        value->data++;
        value->len--;
    }

    while (value->len
           && (value->data[value->len - 1] == ' '
               || value->data[value->len - 1] == '\t'))
    {
        value->len--;
    }

    return NGX_OK;
}


static char *
ngx_http_rooms_parse_room(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf, ngx_str_t *room)
{
    u_char  *p;

    if (ngx_http_rooms_get_value(r, rlcf->room, room) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (room->len == 0) {
        return "room is missing";
    }

    if (room->len > NGX_HTTP_ROOMS_ROOM_MAX) {
        return "room is longer than 32 characters";
    }

    for (p = room->data; p < room->data + room->len; p++) {
        *p = ngx_toupper(*p);

        if ((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
            || *p == '_' || *p == '-')
        {
            continue;
        }

        return "room may hold only A-Z, 0-9, \"_\" and \"-\"";
    }

    return NULL;
}


static char *
ngx_http_rooms_parse_name(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf, ngx_str_t *name)
{
    size_t  n;

    if (ngx_http_rooms_get_value(r, rlcf->name, name) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (name->len == 0) {
        return "name is missing";
    }

    n = ngx_rooms_utf8_text_len(name->data, name->len);

    if (n == (size_t) -1) {
        return "name must be UTF-8 text without control characters";
    }

    if (n > NGX_HTTP_ROOMS_NAME_MAX || name->len > NGX_HTTP_ROOMS_NAME_BYTES)
    {
        return "name is longer than 32 characters";
    }

    return NULL;
}


static char *
ngx_http_rooms_parse_since(ngx_http_request_t *r, uint64_t *since,
    ngx_uint_t *has_since)
{
    u_char     *p;
    uint64_t    n;
    ngx_str_t   value;

    *since = 0;
    *has_since = 0;

    if (ngx_http_arg(r, (u_char *) "since", sizeof("since") - 1, &value)
        != NGX_OK)
    {
        return NULL;
    }

    if (value.len == 0 || value.len > 19) {
        return "since must be a non-negative integer";
    }

    n = 0;

    for (p = value.data; p < value.data + value.len; p++) {
        if (*p < '0' || *p > '9') {
            return "since must be a non-negative integer";
        }

        n = n * 10 + (*p - '0');
    }

    *since = n;
    *has_since = 1;

    return NULL;
}


/*
 * Answers a refused upgrade with its status and a one-line reason.
 */

static ngx_int_t
ngx_http_rooms_refuse(ngx_http_request_t *r, ngx_uint_t status, char *reason)
{
    size_t      len;
    ngx_int_t   rc;
    ngx_buf_t  *b;
    ngx_str_t   value, type;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "rooms: upgrade refused with %ui: %s", status, reason);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    len = ngx_strlen(reason);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, reason, len);
    *b->last++ = LF;

    if (status == NGX_HTTP_ROOMS_UPGRADE_REQUIRED) {
        ngx_str_set(&r->headers_out.status_line, "426 Upgrade Required");
        ngx_str_set(&value, "13");

        if (ngx_http_rooms_add_header(r, "Sec-WebSocket-Version",
                                      sizeof("Sec-WebSocket-Version") - 1,
                                      &value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (status == NGX_HTTP_NOT_ALLOWED) {
        ngx_str_set(&value, "GET");

        if (ngx_http_rooms_add_header(r, "Allow", sizeof("Allow") - 1,
                                      &value)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_str_set(&type, "text/plain");

    return ngx_http_rooms_send_buffer(r, status, &type, type.len, b);
}


/*
 * Sends a whole response held in one buffer: the module's own pages and
 * its refusals.  type_len is the length of the MIME type in type, without
 * its parameters.
 */

ngx_int_t
ngx_http_rooms_send_buffer(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, size_t type_len, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type_len;

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * Checks Origin against "rooms_origins"; without that directive, the
 * origin's host must be the request's Host (same origin).  Returns NULL
 * if the origin is allowed, or the reason to refuse with 403.
 */

static char *
ngx_http_rooms_check_origin(ngx_http_request_t *r,
    ngx_http_rooms_loc_conf_t *rlcf)
{
    u_char           *p, *last;
    ngx_str_t        *pattern, host;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    h = ngx_http_rooms_find_header(r, "Origin", sizeof("Origin") - 1);

    if (h == NULL) {
        return rlcf->origin_required ? "Origin is required" : NULL;
    }

    if (rlcf->origins != NULL) {
        pattern = rlcf->origins->elts;

        for (i = 0; i < rlcf->origins->nelts; i++) {
            if (ngx_http_rooms_match_origin(&pattern[i], &h->value)) {
                return NULL;
            }
        }

    } else if (r->headers_in.host != NULL) {
        p = ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                             (u_char *) "://", 3 - 1);

        if (p != NULL) {
            p += 3;
            last = h->value.data + h->value.len;
            host = r->headers_in.host->value;

            if ((size_t) (last - p) == host.len
                && ngx_strncasecmp(p, host.data, host.len) == 0)
            {
                return NULL;
            }
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "rooms: origin \"%V\" is not allowed", &h->value);

    return "origin not allowed";
}


/*
 * A pattern is "*" (any origin), an origin ("https://chat.example.com"),
 * or either of these with a "*." wildcard label in front of the host: a
 * subdomain of it, with that scheme.  A pattern without a scheme
 * ("example.com:8080", or the host with a wildcard label) matches the
 * host and port with any scheme.
 */

static ngx_uint_t
ngx_http_rooms_match_origin(ngx_str_t *pattern, ngx_str_t *origin)
{
    u_char  *pp, *op, *plast, *olast;

    if (pattern->len == 1 && pattern->data[0] == '*') {
        return 1;
    }

    pp = pattern->data;
    plast = pp + pattern->len;
    op = origin->data;
    olast = op + origin->len;

    op = ngx_strlcasestrn(op, olast, (u_char *) "://", 3 - 1);
    if (op == NULL) {
        return 0;
    }

    op += 3;

    pp = ngx_strlcasestrn(pattern->data, plast, (u_char *) "://", 3 - 1);

    if (pp != NULL) {
        pp += 3;

        /* the schemes must match */

        if (pp - pattern->data != op - origin->data
            || ngx_strncasecmp(pattern->data, origin->data,
                               pp - pattern->data)
               != 0)
        {
            return 0;
        }

    } else {
        pp = pattern->data;
    }

    return ngx_http_rooms_match_host(pp, plast - pp, op, olast - op);
}


static ngx_uint_t
ngx_http_rooms_match_host(u_char *pattern, size_t plen, u_char *host,
    size_t hlen)
{
    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {

        /* "*.example.com" needs at least one label in front */

        pattern++;
        plen--;

        if (hlen <= plen) {
            return 0;
        }

        host += hlen - plen;
        hlen = plen;

        if (*host != '.') {
            return 0;
        }
    }

    return hlen == plen && ngx_strncasecmp(pattern, host, plen) == 0;
}


static ngx_int_t
ngx_http_rooms_accept_key(ngx_http_request_t *r, ngx_str_t *key,
    ngx_str_t *accept)
{
    u_char       digest[20];
    ngx_str_t    src;
    ngx_sha1_t   sha1;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->data, key->len);
    ngx_sha1_update(&sha1, NGX_HTTP_ROOMS_WS_GUID,
                    sizeof(NGX_HTTP_ROOMS_WS_GUID) - 1);
    ngx_sha1_final(digest, &sha1);

    src.data = digest;
    src.len = sizeof(digest);

    accept->data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(src.len));
    if (accept->data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(accept, &src);

    return NGX_OK;
}


/*
 * permessage-deflate (RFC 7692): the first offer we can honour, looked
 * for through every Sec-WebSocket-Extensions line in order.  No offer,
 * or none acceptable: no extension, *extensions stays empty.
 */

static ngx_int_t
ngx_http_rooms_negotiate_deflate(ngx_http_request_t *r,
    ngx_http_rooms_conn_t *conn, ngx_str_t *extensions)
{
    ngx_uint_t                     i;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_rooms_ws_deflate_offer_t   offer;

    static char  name[] = "Sec-WebSocket-Extensions";

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_OK;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof(name) - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) name,
                               sizeof(name) - 1) == 0
            && ngx_rooms_ws_deflate_negotiate(h[i].value.data,
                                              h[i].value.len, &offer))
        {
            break;
        }
    }

    extensions->data = ngx_pnalloc(r->pool,
                                   NGX_ROOMS_WS_DEFLATE_RESPONSE_MAX);
    if (extensions->data == NULL) {
        return NGX_ERROR;
    }

    extensions->len = ngx_rooms_ws_deflate_response(extensions->data,
                                                    &offer);

    /*
     * A message compressed on its own refers back at most its length:
     * with a window of 2^bits asked for, it is sent compressed if it is
     * no longer than that, else as it is.
     */

    conn->deflate = 1;
    conn->deflate_max = offer.server_max_window_bits
                        ? (size_t) 1 << offer.server_max_window_bits
                        : NGX_MAX_SIZE_T_VALUE;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "rooms: extension \"%V\"", extensions);

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_add_header(ngx_http_request_t *r, char *name, size_t len,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = len;
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_list_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_rooms_link_up()) {
        return ngx_http_rooms_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "sidecar unavailable");
    }

    return ngx_http_rooms_link_request(r, NGX_ROOMS_IPC_ROOMS,
                                       NGX_HTTP_ROOMS_LIST_TIMEOUT);
}


/*
 * Upgrades are counted by the answer the client got: a refusal in any
 * phase (allow/deny, limit_conn, auth_request, ours) when the request is
 * logged; a 101 by ngx_http_rooms_conn_start(), when it is given.
 */

static ngx_int_t
ngx_http_rooms_log_handler(ngx_http_request_t *r)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->handler != ngx_http_rooms_websocket_handler
        || r != r->main
        || r->headers_out.status == NGX_HTTP_SWITCHING_PROTOCOLS)
    {
        return NGX_OK;
    }

    ngx_http_rooms_metrics_upgrade(r->headers_out.status);

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_rooms_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rooms_module);

    if (ngx_http_rooms_metrics_add_zone(cf, rmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_rooms_log_handler;

    return NGX_OK;
}


static void *
ngx_http_rooms_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_rooms_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rooms_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rmcf->sidecar = NULL;
     *     rmcf->metrics_zone = NULL;
     */

    rmcf->hold_time = NGX_CONF_UNSET_MSEC;
    rmcf->hold_size = NGX_CONF_UNSET_SIZE;
    rmcf->shutdown_spread = NGX_CONF_UNSET_MSEC;

    return rmcf;
}


static char *
ngx_http_rooms_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_rooms_main_conf_t *rmcf = conf;

    ngx_conf_init_msec_value(rmcf->hold_time, 5000);
    ngx_conf_init_size_value(rmcf->hold_size, 4 * 1024 * 1024);
    ngx_conf_init_msec_value(rmcf->shutdown_spread, 5000);

    return NGX_CONF_OK;
}


static void *
ngx_http_rooms_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_rooms_loc_conf_t  *rlcf;

    rlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rooms_loc_conf_t));
    if (rlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rlcf->room = NULL;
     *     rlcf->name = NULL;
     */

    rlcf->origins = NGX_CONF_UNSET_PTR;
    rlcf->origin_required = NGX_CONF_UNSET;
    rlcf->max_message_size = NGX_CONF_UNSET_SIZE;
    rlcf->output_queue_size = NGX_CONF_UNSET_SIZE;
    rlcf->ping_interval = NGX_CONF_UNSET_MSEC;
    rlcf->idle_timeout = NGX_CONF_UNSET_MSEC;
    rlcf->log_at = NGX_CONF_UNSET_UINT;
    rlcf->access_log = NGX_CONF_UNSET_PTR;
    rlcf->deflate = NGX_CONF_UNSET;

    return rlcf;
}


static char *
ngx_http_rooms_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_rooms_loc_conf_t *prev = parent;
    ngx_http_rooms_loc_conf_t *conf = child;

    if (ngx_http_rooms_merge_source(cf, &conf->room, prev->room,
                                    "$arg_room")
        != NGX_CONF_OK
        || ngx_http_rooms_merge_source(cf, &conf->name, prev->name,
                                       "$arg_name")
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_ptr_value(conf->origins, prev->origins, NULL);
    ngx_conf_merge_value(conf->origin_required, prev->origin_required, 0);
    ngx_conf_merge_msec_value(conf->ping_interval, prev->ping_interval,
                              30000);
    ngx_conf_merge_msec_value(conf->idle_timeout, prev->idle_timeout,
                              75000);
    ngx_conf_merge_size_value(conf->max_message_size,
                              prev->max_message_size, 16 * 1024);
    ngx_conf_merge_size_value(conf->output_queue_size,
                              prev->output_queue_size, 1024 * 1024);
    ngx_conf_merge_ptr_value(conf->access_log, prev->access_log, NULL);

    /*
     * rooms_log_at is inherited unset, so that its default follows the
     * location's own rooms_access_log: with it, nginx's line is written
     * at the upgrade and the request is not kept.
     */

    if (conf->log_at == NGX_CONF_UNSET_UINT) {
        conf->log_at = prev->log_at;
    }

    if (conf->log_at == NGX_CONF_UNSET_UINT) {
        conf->log_close = (conf->access_log == NULL);

    } else {
        conf->log_close = (conf->log_at == NGX_HTTP_ROOMS_LOG_CLOSE);
    }
    ngx_conf_merge_value(conf->deflate, prev->deflate, 0);

    if (conf->max_message_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_max_message_size\" must be positive");
        return NGX_CONF_ERROR;
    }

    /*
     * A message is relayed to the room in its envelope, re-encoded, in
     * one link frame (at most 16m): a bound with room to spare.
     */

    if (conf->max_message_size > NGX_HTTP_ROOMS_MESSAGE_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_max_message_size\" must not be more "
                           "than %uz", (size_t) NGX_HTTP_ROOMS_MESSAGE_MAX);
        return NGX_CONF_ERROR;
    }

    if (conf->output_queue_size < conf->max_message_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_output_queue_size\" must not be less "
                           "than \"rooms_max_message_size\"");
        return NGX_CONF_ERROR;
    }

    if (conf->idle_timeout && conf->ping_interval >= conf->idle_timeout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_ping_interval\" must be less than "
                           "\"rooms_idle_timeout\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_rooms_merge_source(ngx_conf_t *cf, ngx_http_complex_value_t **cv,
    ngx_http_complex_value_t *prev, char *dflt)
{
    ngx_http_compile_complex_value_t  ccv;

    if (*cv != NULL) {
        return NGX_CONF_OK;
    }

    if (prev != NULL) {
        *cv = prev;
        return NGX_CONF_OK;
    }

    *cv = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (*cv == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = ngx_palloc(cf->pool, sizeof(ngx_str_t));
    if (ccv.value == NULL) {
        return NGX_CONF_ERROR;
    }

    ccv.value->data = (u_char *) dflt;
    ccv.value->len = ngx_strlen(dflt);
    ccv.complex_value = *cv;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_rooms_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rooms_loc_conf_t *rlcf = conf;

    ngx_str_t   *value, *origin;
    ngx_uint_t   i;

    if (rlcf->origins != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    rlcf->origins = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                     sizeof(ngx_str_t));
    if (rlcf->origins == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_rooms_origin_valid(&value[i]) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid origin \"%V\": use \"*\", "
                               "\"https://host[:port]\", \"*.domain\" or "
                               "\"https://*.domain\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        origin = ngx_array_push(rlcf->origins);
        if (origin == NULL) {
            return NGX_CONF_ERROR;
        }

        *origin = value[i];
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_rooms_sidecar(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rooms_main_conf_t *rmcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (rmcf->sidecar != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len < 6
        || ngx_strncmp(value[1].data, "unix:", 5) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"rooms_sidecar\" needs a \"unix:\" path, "
                           "not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in \"%V\"", u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    rmcf->sidecar = &u.addrs[0];

    return NGX_CONF_OK;
}


/*
 * "rooms_websocket", "rooms_list" and "rooms_metrics": the location's
 * content handler is the one the directive's post field points to.
 */

static char *
ngx_http_rooms_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_handler_pt       *handler = cmd->post;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler != NULL) {
        return "is duplicate";
    }

    clcf->handler = *handler;

    return NGX_CONF_OK;
}


/*
 * An origin pattern has no path, and a "*" only on its own or as the
 * "*." label in front of the host.
 */

static ngx_int_t
ngx_http_rooms_origin_valid(ngx_str_t *pattern)
{
    u_char  *p, *host, *last;

    p = pattern->data;
    last = p + pattern->len;

    if (pattern->len == 1 && *p == '*') {
        return NGX_OK;
    }

    host = ngx_strlcasestrn(p, last, (u_char *) "://", 3 - 1);
    host = (host == NULL) ? p : host + 3;

    if (ngx_strlchr(p, host, '*') != NULL) {
        return NGX_ERROR;
    }

    if (last - host > 2 && host[0] == '*' && host[1] == '.') {
        host += 2;
    }

    if (host == last
        || ngx_strlchr(host, last, '*') != NULL
        || ngx_strlchr(host, last, '/') != NULL)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_rooms_add_variables(cf);
}


static ngx_int_t
ngx_http_rooms_init_process(ngx_cycle_t *cycle)
{
    ngx_http_rooms_main_conf_t  *rmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_rooms_module);

    if (rmcf == NULL) {
        return NGX_OK;
    }

    ngx_http_rooms_metrics_init_process(cycle, rmcf);

    if (rmcf->sidecar == NULL) {
        return NGX_OK;
    }

    return ngx_http_rooms_link_init(cycle, rmcf);
}


static void
ngx_http_rooms_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_rooms_conn_exit();
    ngx_http_rooms_link_exit(cycle);
    ngx_http_rooms_metrics_exit_process();
    ngx_http_rooms_deflate_exit();
}
