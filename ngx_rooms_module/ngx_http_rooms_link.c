
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_module.h"


/*
 * The worker's one link to the sidecar (docs/protocol.md): connection and
 * reconnection, frame I/O, and the worker's indexes that sidecar frames
 * address: live connections by number, attached members by room, pending
 * GET /rooms and metrics requests.
 */


#define NGX_HTTP_ROOMS_LINK_BUF          65536
#define NGX_HTTP_ROOMS_BACKOFF_MIN       50
#define NGX_HTTP_ROOMS_BACKOFF_MAX       500
#define NGX_HTTP_ROOMS_LINK_OUT_MAX      (64 * 1024 * 1024)


typedef struct {
    ngx_chain_t                    cl;
    ngx_buf_t                      buf;
    u_char                         data[1];
} ngx_http_rooms_link_buf_t;


typedef struct {
    ngx_queue_t                    queue;
    uint64_t                       id;
    ngx_uint_t                     type;        /* ROOMS or STATS */
    ngx_http_request_t            *request;
    ngx_event_t                    timeout;
} ngx_http_rooms_pending_t;


/*
 * A client message the sidecar has not answered yet (ACK).  Held while
 * no sidecar takes it, sent once one does; kept after that until its ACK,
 * so that a sidecar that dies with it is asked again by the next one.
 */

typedef struct {
    ngx_queue_t                    queue;       /* conn->unanswered */
    ngx_queue_t                    held;        /* link->held while unsent,
                                                   then link->sent */
    ngx_http_rooms_conn_t         *conn;
    uint64_t                       seq;
    ngx_msec_t                     time;        /* when the client sent it */
    ngx_msec_t                     sent_at;     /* to the current sidecar */
    unsigned                       sent:1;      /* to some sidecar */
    size_t                         len;
    u_char                         data[1];
} ngx_http_rooms_msg_t;


/* the memory an unanswered message holds, as rooms_hold_size counts it */
#define NGX_HTTP_ROOMS_MSG_SIZE(len)                                         \
    (offsetof(ngx_http_rooms_msg_t, data) + (len))


typedef struct {
    ngx_addr_t                    *addr;
    ngx_log_t                     *log;
    ngx_connection_t              *connection;
    ngx_uint_t                     up;          /* HELLO_ACK received */
    ngx_event_t                    reconnect;
    ngx_msec_t                     backoff;

    u_char                         token[12];   /* of this worker's ids */

    ngx_queue_t                    held;        /* unsent messages, by age */
    ngx_uint_t                     held_n;
    ngx_queue_t                    sent;        /* sent, unanswered, by
                                                   sent_at */
    size_t                         unanswered_size; /* memory they hold */
    ngx_msec_t                     hold_time;
    size_t                         hold_size;
    ngx_event_t                    hold;

    u_char                        *in;
    size_t                         in_size;
    size_t                         in_len;

    ngx_chain_t                   *out;
    ngx_chain_t                  **last_out;
    size_t                         out_size;
    ngx_uint_t                     overflow;

    ngx_rbtree_t                   conns;
    ngx_rbtree_node_t              conns_sentinel;
    ngx_queue_t                    all;

    ngx_rbtree_t                   rooms;
    ngx_rbtree_node_t              rooms_sentinel;

    ngx_queue_t                    pending;
    uint64_t                       next_request;
    ngx_uint_t                     ups;         /* HELLO_ACKs so far */
} ngx_http_rooms_link_t;


static void ngx_http_rooms_link_connect(ngx_http_rooms_link_t *link);
static void ngx_http_rooms_link_reconnect_handler(ngx_event_t *ev);
static ngx_uint_t ngx_http_rooms_link_wanted(ngx_http_rooms_link_t *link);
static void ngx_http_rooms_link_connected_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_rooms_link_hello(ngx_http_rooms_link_t *link);
static ngx_int_t ngx_http_rooms_link_ready(ngx_http_rooms_link_t *link);
static void ngx_http_rooms_link_arm_hold(ngx_http_rooms_link_t *link);
static void ngx_http_rooms_link_token(ngx_http_rooms_link_t *link);
static ngx_int_t ngx_http_rooms_link_send_msg(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m, ngx_uint_t flags);
static void ngx_http_rooms_link_answered(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, uint64_t seq);
static void ngx_http_rooms_link_free_msg(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m);
static void ngx_http_rooms_link_hold_handler(ngx_event_t *ev);
static void ngx_http_rooms_link_refuse(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m);
static void ngx_http_rooms_link_unavailable(ngx_http_rooms_conn_t *conn,
    u_char *data, size_t len);
static u_char *ngx_http_rooms_link_unavailable_json(u_char *buf,
    u_char *data, size_t len);
static void ngx_http_rooms_link_send_text(ngx_http_rooms_conn_t *conn,
    u_char *data, size_t len);
static void ngx_http_rooms_link_down(ngx_http_rooms_link_t *link,
    ngx_uint_t retry);
static void ngx_http_rooms_link_read_handler(ngx_event_t *ev);
static void ngx_http_rooms_link_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_rooms_link_flush(ngx_http_rooms_link_t *link);
static ngx_int_t ngx_http_rooms_link_queue(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg);
static ngx_int_t ngx_http_rooms_link_announce(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, ngx_uint_t flags);
static ngx_int_t ngx_http_rooms_link_input(ngx_http_rooms_link_t *link);
static ngx_int_t ngx_http_rooms_link_dispatch(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg);
static ngx_http_rooms_conn_t *ngx_http_rooms_link_find(
    ngx_http_rooms_link_t *link, uint64_t id);
static void ngx_http_rooms_link_attach(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, uint64_t last_id);
static void ngx_http_rooms_link_unattach(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn);
static void ngx_http_rooms_link_broadcast(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg);
static void ngx_http_rooms_list_reply(ngx_http_rooms_pending_t *pending,
    ngx_uint_t status, ngx_rooms_ipc_str_t *body);
static void ngx_http_rooms_list_timeout(ngx_event_t *ev);
static void ngx_http_rooms_list_cleanup(void *data);


static ngx_http_rooms_link_t  ngx_http_rooms_link;

static u_char  ngx_http_rooms_unavailable_head[] =
    "{\"type\":\"error\",\"data\":{\"code\":\"unavailable\","
    "\"message\":\"the room service is unavailable, message not sent\"";

/* the head, ,"ref":"<escaped ref>", and }} */
#define NGX_HTTP_ROOMS_UNAVAILABLE_LEN                                        \
    (sizeof(ngx_http_rooms_unavailable_head) + 9 + 2 * NGX_ROOMS_REF_MAX + 2)


ngx_int_t
ngx_http_rooms_link_init(ngx_cycle_t *cycle,
    ngx_http_rooms_main_conf_t *rmcf)
{
    ngx_http_rooms_link_t  *link;

    link = &ngx_http_rooms_link;

    ngx_memzero(link, sizeof(ngx_http_rooms_link_t));

    link->addr = rmcf->sidecar;
    link->hold_time = rmcf->hold_time;
    link->hold_size = rmcf->hold_size;
    link->log = cycle->log;
    link->last_out = &link->out;
    link->backoff = NGX_HTTP_ROOMS_BACKOFF_MIN;
    link->next_request = 1;

    link->in_size = NGX_HTTP_ROOMS_LINK_BUF;
    link->in = ngx_alloc(link->in_size, cycle->log);
    if (link->in == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&link->conns, &link->conns_sentinel,
                    ngx_rbtree_insert_value);
    ngx_rbtree_init(&link->rooms, &link->rooms_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&link->all);
    ngx_queue_init(&link->pending);
    ngx_queue_init(&link->held);
    ngx_queue_init(&link->sent);

    link->reconnect.handler = ngx_http_rooms_link_reconnect_handler;
    link->reconnect.data = link;
    link->reconnect.log = cycle->log;
    link->reconnect.cancelable = 1;

    link->hold.handler = ngx_http_rooms_link_hold_handler;
    link->hold.data = link;
    link->hold.log = cycle->log;
    link->hold.cancelable = 1;

    ngx_http_rooms_link_token(link);

    ngx_http_rooms_link_connect(link);

    return NGX_OK;
}


void
ngx_http_rooms_link_exit(ngx_cycle_t *cycle)
{
    ngx_http_rooms_link_t  *link;

    link = &ngx_http_rooms_link;

    if (link->addr == NULL) {
        return;
    }

    if (link->reconnect.timer_set) {
        ngx_del_timer(&link->reconnect);
    }

    if (link->hold.timer_set) {
        ngx_del_timer(&link->hold);
    }

    ngx_http_rooms_link_down(link, 0);
}


/*
 * Player ids are minted here, by the worker that owns the connection:
 * "<token>.<pid>.<connection number>", with a random token per worker
 * process, so that an id is the same for the whole life of its
 * connection, across sidecar restarts, and unique across hosts.
 */

static void
ngx_http_rooms_link_token(ngx_http_rooms_link_t *link)
{
    u_char      rnd[6];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_uint_t  i;

    n = 0;

    fd = ngx_open_file("/dev/urandom", NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd != NGX_INVALID_FILE) {
        n = read(fd, rnd, sizeof(rnd));
        (void) ngx_close_file(fd);
    }

    if (n != (ssize_t) sizeof(rnd)) {
        for (i = 0; i < sizeof(rnd); i++) {
            rnd[i] = (u_char) (ngx_random() ^ ngx_pid ^ ngx_time());
        }
    }

    (void) ngx_hex_dump(link->token, rnd, sizeof(rnd));
}


/* buf has room for NGX_HTTP_ROOMS_PLAYER_MAX bytes */

u_char *
ngx_http_rooms_link_player(ngx_http_rooms_conn_t *conn, u_char *buf)
{
    return ngx_snprintf(buf, NGX_HTTP_ROOMS_PLAYER_MAX, "%*s.%P.%uL",
                        sizeof(ngx_http_rooms_link.token),
                        ngx_http_rooms_link.token, ngx_pid, conn->id);
}


ngx_uint_t
ngx_http_rooms_link_up(void)
{
    return ngx_http_rooms_link.up && !ngx_http_rooms_link.overflow;
}


/*
 * Connects the link.  Not ngx_event_connect_peer(): a sidecar that is not
 * (yet) there is an expected state, logged as a warning, not as a
 * critical error.
 */

static void
ngx_http_rooms_link_connect(ngx_http_rooms_link_t *link)
{
    int                rc;
    ngx_err_t          err;
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = ngx_socket(link->addr->sockaddr->sa_family, SOCK_STREAM, 0);

    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ALERT, link->log, ngx_socket_errno,
                      ngx_socket_n " failed");
        goto retry;
    }

    c = ngx_get_connection(s, link->log);

    if (c == NULL) {
        if (ngx_close_socket(s) == -1) {
            ngx_log_error(NGX_LOG_ALERT, link->log, ngx_socket_errno,
                          ngx_close_socket_n " failed");
        }

        goto retry;
    }

    if (ngx_nonblocking(s) == -1) {
        ngx_log_error(NGX_LOG_ALERT, link->log, ngx_socket_errno,
                      ngx_nonblocking_n " failed");
        goto failed;
    }

    c->recv = ngx_recv;
    c->send = ngx_send;
    c->recv_chain = ngx_recv_chain;
    c->send_chain = ngx_send_chain;

    c->log = link->log;
    c->read->log = link->log;
    c->write->log = link->log;
    c->data = link;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            goto failed;
        }

    } else if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_CLEAR_EVENT)
               != NGX_OK)
    {
        goto failed;
    }

    rc = connect(s, link->addr->sockaddr, link->addr->socklen);

    if (rc == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EINPROGRESS && err != NGX_EAGAIN) {
            ngx_log_error(NGX_LOG_WARN, link->log, err,
                          "rooms: sidecar at \"%V\" unreachable, retrying "
                          "in %Mms", &link->addr->name, link->backoff);
            goto failed;
        }

        /* the sidecar's backlog is full: wait for the socket */

        link->connection = c;
        c->read->handler = ngx_http_rooms_link_connected_handler;
        c->write->handler = ngx_http_rooms_link_connected_handler;

        if (!ngx_add_conn
            && ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_CLEAR_EVENT)
               != NGX_OK)
        {
            ngx_http_rooms_link_down(link, 1);
        }

        return;
    }

    link->connection = c;
    c->write->ready = 1;

    ngx_http_rooms_link_connected_handler(c->write);

    return;

failed:

    ngx_close_connection(c);

retry:

    ngx_add_timer(&link->reconnect, link->backoff);
    link->backoff = ngx_min(link->backoff * 2, NGX_HTTP_ROOMS_BACKOFF_MAX);
}


static void
ngx_http_rooms_link_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_rooms_link_t  *link = ev->data;

    if (!ngx_http_rooms_link_wanted(link)) {
        return;
    }

    ngx_http_rooms_link_connect(link);
}


/*
 * A shutting down worker keeps its link, and reconnects it, while it has
 * clients: they are served until they leave or the drain ends.  Then the
 * worker exits and ngx_http_rooms_link_exit() closes it.
 */

static ngx_uint_t
ngx_http_rooms_link_wanted(ngx_http_rooms_link_t *link)
{
    if (ngx_terminate) {
        return 0;
    }

    if (ngx_exiting || ngx_quit) {
        return !ngx_queue_empty(&link->all);
    }

    return 1;
}


static void
ngx_http_rooms_link_connected_handler(ngx_event_t *ev)
{
    int                     err;
    socklen_t               len;
    ngx_connection_t       *c;
    ngx_http_rooms_link_t  *link;

    c = ev->data;
    link = c->data;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_WARN, link->log, err,
                      "rooms: connect() to sidecar at \"%V\" failed",
                      &link->addr->name);
        ngx_http_rooms_link_down(link, 1);
        return;
    }

    c->read->handler = ngx_http_rooms_link_read_handler;
    c->write->handler = ngx_http_rooms_link_write_handler;

    /*
     * Not idle: a graceful shutdown keeps the link while the worker has
     * clients.  Its reconnect timer is cancelable: the link alone does
     * not keep a shutting down worker.
     */

    link->backoff = NGX_HTTP_ROOMS_BACKOFF_MIN;

    ngx_log_error(NGX_LOG_INFO, link->log, 0,
                  "rooms: connected to sidecar at \"%V\"", &link->addr->name);

    if (ngx_http_rooms_link_hello(link) != NGX_OK) {
        ngx_http_rooms_link_down(link, 1);
        return;
    }

    if (ngx_http_rooms_link_flush(link) != NGX_OK) {
        ngx_http_rooms_link_down(link, 1);
        return;
    }

    if (c->read->ready) {
        ngx_http_rooms_link_read_handler(c->read);
    }
}


/*
 * HELLO only: nothing else is written until the sidecar answers it, so
 * that a socket held by systemd while the sidecar restarts never takes
 * client messages nobody may read.
 */

static ngx_int_t
ngx_http_rooms_link_hello(ngx_http_rooms_link_t *link)
{
    ngx_rooms_ipc_msg_t  msg;

    ngx_memzero(&msg, sizeof(ngx_rooms_ipc_msg_t));

    msg.type = NGX_ROOMS_IPC_HELLO;
    msg.version = NGX_ROOMS_IPC_VERSION;
    msg.pid = (uint32_t) ngx_pid;

    return ngx_http_rooms_link_queue(link, &msg);
}


/*
 * HELLO_ACK: the sidecar is there.  Every client that outlived the
 * previous link is announced again: one that was attached to its room
 * with RESUME and the room's last delivered id, so that the sidecar
 * fills the gap from history and sends no second welcome; one that was
 * still joining as a new joiner.  Then what the clients sent meanwhile,
 * in order: a message a previous sidecar may have published already is
 * sent again (the publish script drops a duplicate), or, once past the
 * hold time, marked EXPIRED (the sidecar answers whether it went out,
 * and does not publish it late).
 */

static ngx_int_t
ngx_http_rooms_link_ready(ngx_http_rooms_link_t *link)
{
    ngx_uint_t              flags;
    ngx_msec_t              now;
    ngx_queue_t            *q, *next, *mq, *mnext;
    ngx_http_rooms_conn_t  *conn;
    ngx_http_rooms_msg_t   *m;

    if (link->up) {
        return NGX_OK;
    }

    link->up = 1;
    now = ngx_current_msec;

    ngx_http_rooms_stats->link_up = 1;

    if (link->ups++) {
        ngx_http_rooms_count(NGX_HTTP_ROOMS_M_LINK_RECONNECTS, 1);
    }

    ngx_log_error(NGX_LOG_INFO, link->log, 0,
                  "rooms: sidecar at \"%V\" ready", &link->addr->name);

    for (q = ngx_queue_head(&link->all);
         q != ngx_queue_sentinel(&link->all);
         q = next)
    {
        next = ngx_queue_next(q);
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, queue);

        if (conn->room == NULL && conn->welcomed) {

            /*
             * The sidecar went away in the middle of this client's join
             * (its welcome was sent, its ATTACH was not): it cannot be
             * resumed exactly.  It reconnects, with since=.
             */

            ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                          "rooms: sidecar restarted during the join");

            ngx_http_rooms_conn_kick(conn, NGX_ROOMS_WS_CLOSE_RESTART,
                                     (u_char *) "service restart",
                                     sizeof("service restart") - 1);
            continue;
        }

        flags = conn->room ? NGX_ROOMS_IPC_F_RESUME : 0;

        if (ngx_http_rooms_link_announce(link, conn, flags) != NGX_OK) {
            return NGX_ERROR;
        }

        for (mq = ngx_queue_head(&conn->unanswered);
             mq != ngx_queue_sentinel(&conn->unanswered);
             mq = mnext)
        {
            mnext = ngx_queue_next(mq);
            m = ngx_queue_data(mq, ngx_http_rooms_msg_t, queue);

            /* a burst the worker made: the sidecar does not rate limit it */

            flags = NGX_ROOMS_IPC_F_RESENT;

            if (now - m->time >= link->hold_time) {
                if (!m->sent) {
                    /* refused by the hold timer, armed below */
                    continue;
                }

                flags |= NGX_ROOMS_IPC_F_EXPIRED;
            }

            if (ngx_http_rooms_link_send_msg(link, m, flags) != NGX_OK) {
                return NGX_ERROR;
            }
        }
    }

    ngx_http_rooms_link_arm_hold(link);

    return NGX_OK;
}


/*
 * Closes the link.  Clients stay connected but detached from their rooms
 * until a new link re-announces them; pending GET /rooms requests get
 * 503.
 */

static void
ngx_http_rooms_link_down(ngx_http_rooms_link_t *link, ngx_uint_t retry)
{
    ngx_uint_t                 level;
    ngx_queue_t               *q;
    ngx_chain_t               *cl, *next;
    ngx_http_rooms_conn_t     *conn;
    ngx_http_rooms_pending_t  *pending;

    if (link->connection) {
        level = (ngx_exiting || ngx_terminate || ngx_quit) ? NGX_LOG_INFO
                                                           : NGX_LOG_WARN;

        ngx_log_error(level, link->log, 0,
                      "rooms: link to sidecar at \"%V\" closed",
                      &link->addr->name);
    }

    link->up = 0;
    ngx_http_rooms_stats->link_up = 0;

    if (link->connection) {
        ngx_close_connection(link->connection);
        link->connection = NULL;
    }

    for (cl = link->out; cl; cl = next) {
        next = cl->next;
        ngx_free(cl);
    }

    link->out = NULL;
    link->last_out = &link->out;
    link->out_size = 0;
    link->overflow = 0;
    link->in_len = 0;

    /*
     * Clients stay attached to their rooms: the worker remembers where
     * each room's stream stopped, and the next sidecar resumes it there.
     */

    for (q = ngx_queue_head(&link->all);
         q != ngx_queue_sentinel(&link->all);
         q = ngx_queue_next(q))
    {
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, queue);

        conn->announced = 0;
    }

    while (!ngx_queue_empty(&link->pending)) {
        q = ngx_queue_head(&link->pending);
        pending = ngx_queue_data(q, ngx_http_rooms_pending_t, queue);

        ngx_http_rooms_list_reply(pending, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  NULL);
    }

    if (retry && ngx_http_rooms_link_wanted(link)) {
        ngx_add_timer(&link->reconnect, link->backoff);
        link->backoff = ngx_min(link->backoff * 2,
                                NGX_HTTP_ROOMS_BACKOFF_MAX);
    }
}


static void
ngx_http_rooms_link_read_handler(ngx_event_t *ev)
{
    size_t                  size;
    ssize_t                 n;
    ngx_connection_t       *c;
    ngx_http_rooms_link_t  *link;

    c = ev->data;
    link = c->data;

    if (c->close) {

        /*
         * The shutdown timer (worker_shutdown_timeout): the clients left
         * are closed one by one, and served until then.
         */

        if (!ngx_http_rooms_link_wanted(link)) {
            ngx_http_rooms_link_down(link, 0);
            return;
        }

        c->close = 0;
        c->error = 0;
    }

    for ( ;; ) {

        size = link->in_size - link->in_len;

        n = c->recv(c, link->in + link->in_len, size);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_rooms_link_down(link, 1);
            ngx_http_rooms_conn_flush_dirty();
            return;
        }

        link->in_len += n;

        if (ngx_http_rooms_link_input(link) != NGX_OK) {
            ngx_http_rooms_link_down(link, 1);
            ngx_http_rooms_conn_flush_dirty();
            return;
        }
    }

    ngx_http_rooms_conn_flush_dirty();

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_rooms_link_down(link, 1);
    }
}


/*
 * Decodes and dispatches every complete frame in the input buffer, keeps
 * the incomplete rest, and makes room for a frame larger than the buffer.
 */

static ngx_int_t
ngx_http_rooms_link_input(ngx_http_rooms_link_t *link)
{
    long                  n;
    u_char               *p, *last, *in;
    size_t                need;
    ngx_rooms_ipc_msg_t   msg;

    p = link->in;
    last = link->in + link->in_len;

    for ( ;; ) {

        n = ngx_rooms_ipc_decode(p, last - p, &msg);

        if (n == NGX_ROOMS_IPC_MALFORMED) {
            ngx_log_error(NGX_LOG_ERR, link->log, 0,
                          "rooms: malformed frame from sidecar");
            return NGX_ERROR;
        }

        if (n == NGX_ROOMS_IPC_INCOMPLETE) {
            break;
        }

        if (ngx_http_rooms_link_dispatch(link, &msg) != NGX_OK) {
            return NGX_ERROR;
        }

        p += n;
    }

    link->in_len = last - p;

    if (link->in_len && p != link->in) {
        ngx_memmove(link->in, p, link->in_len);
    }

    if (link->in_len >= 4) {
        p = link->in;
        need = 4 + (((size_t) p[0] << 24) | ((size_t) p[1] << 16)
                    | ((size_t) p[2] << 8) | (size_t) p[3]);

        if (need > link->in_size) {
            in = ngx_alloc(need, link->log);
            if (in == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(in, link->in, link->in_len);
            ngx_free(link->in);

            link->in = in;
            link->in_size = need;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_link_dispatch(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg)
{
    ngx_queue_t               *q;
    ngx_http_rooms_conn_t     *conn;
    ngx_http_rooms_pending_t  *pending;

    switch (msg->type) {

    case NGX_ROOMS_IPC_HELLO_ACK:
        return ngx_http_rooms_link_ready(link);

    case NGX_ROOMS_IPC_SEND:
        conn = ngx_http_rooms_link_find(link, msg->id);
        if (conn == NULL) {
            break;
        }

        conn->welcomed = 1;

        ngx_http_rooms_link_send_text(conn, (u_char *) msg->payload.data,
                                      msg->payload.len);
        break;

    case NGX_ROOMS_IPC_ACK:
        conn = ngx_http_rooms_link_find(link, msg->id);
        if (conn == NULL) {
            break;
        }

        ngx_http_rooms_link_answered(link, conn, msg->seq);

        if (msg->payload.len) {
            ngx_http_rooms_link_send_text(conn, (u_char *) msg->payload.data,
                                          msg->payload.len);
        }

        break;

    case NGX_ROOMS_IPC_ATTACH:
        conn = ngx_http_rooms_link_find(link, msg->id);
        if (conn != NULL) {
            ngx_http_rooms_link_attach(link, conn, msg->last_id);
        }

        break;

    case NGX_ROOMS_IPC_BROADCAST:
        ngx_http_rooms_link_broadcast(link, msg);
        break;

    case NGX_ROOMS_IPC_KICK:
        conn = ngx_http_rooms_link_find(link, msg->id);
        if (conn != NULL) {
            ngx_http_rooms_conn_kick(conn, msg->status,
                                     (u_char *) msg->payload.data,
                                     msg->payload.len);
        }

        break;

    case NGX_ROOMS_IPC_ROOMS_REPLY:
    case NGX_ROOMS_IPC_STATS_REPLY:
        for (q = ngx_queue_head(&link->pending);
             q != ngx_queue_sentinel(&link->pending);
             q = ngx_queue_next(q))
        {
            pending = ngx_queue_data(q, ngx_http_rooms_pending_t, queue);

            if (pending->id == msg->id
                && (pending->type == NGX_ROOMS_IPC_STATS)
                   == (msg->type == NGX_ROOMS_IPC_STATS_REPLY))
            {
                ngx_http_rooms_list_reply(pending, NGX_HTTP_OK,
                                          &msg->payload);
                break;
            }
        }

        break;

    default:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, link->log, 0,
                       "rooms: sidecar frame of unknown type 0x%xi skipped",
                       (ngx_int_t) msg->type);
        break;
    }

    return NGX_OK;
}


static ngx_http_rooms_conn_t *
ngx_http_rooms_link_find(ngx_http_rooms_link_t *link, uint64_t id)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    key = (ngx_rbtree_key_t) id;
    node = link->conns.root;
    sentinel = link->conns.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        return (ngx_http_rooms_conn_t *) node;
    }

    return NULL;
}


static void
ngx_http_rooms_link_attach(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, uint64_t last_id)
{
    uint32_t                hash;
    ngx_str_node_t         *sn;
    ngx_http_rooms_room_t  *room;

    if (conn->room != NULL || conn->close_sent) {
        return;
    }

    hash = ngx_crc32_short(conn->room_code.data, conn->room_code.len);

    sn = ngx_str_rbtree_lookup(&link->rooms, &conn->room_code, hash);

    if (sn != NULL) {
        room = (ngx_http_rooms_room_t *) sn;

    } else {
        room = ngx_alloc(sizeof(ngx_http_rooms_room_t), link->log);
        if (room == NULL) {
            ngx_http_rooms_conn_kick(conn, NGX_ROOMS_WS_CLOSE_INTERNAL,
                                     NULL, 0);
            return;
        }

        ngx_memcpy(room->code, conn->room_code.data, conn->room_code.len);

        room->sn.str.data = room->code;
        room->sn.str.len = conn->room_code.len;
        room->sn.node.key = hash;
        room->count = 0;
        room->last_id = last_id;
        ngx_queue_init(&room->members);

        ngx_rbtree_insert(&link->rooms, &room->sn.node);
    }

    ngx_queue_insert_tail(&room->members, &conn->member);
    room->count++;
    conn->room = room;
}


static void
ngx_http_rooms_link_unattach(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn)
{
    ngx_http_rooms_room_t  *room;

    room = conn->room;

    if (room == NULL) {
        return;
    }

    ngx_queue_remove(&conn->member);
    conn->room = NULL;

    if (--room->count == 0) {
        ngx_rbtree_delete(&link->rooms, &room->sn.node);
        ngx_free(room);
    }
}


/*
 * One frame for the whole room: built once, queued on every attached
 * member; ngx_http_rooms_conn_flush_dirty() writes it after the link's
 * input is processed.  Members with permessage-deflate share one
 * compressed frame, built if one of them is there.
 */

static void
ngx_http_rooms_link_broadcast(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg)
{
    ngx_str_t                str;
    ngx_queue_t             *q, *next;
    ngx_str_node_t          *sn;
    ngx_http_rooms_text_t    text;
    ngx_http_rooms_room_t   *room;
    ngx_http_rooms_conn_t   *conn;
    ngx_http_rooms_frame_t  *frame;

    str.data = (u_char *) msg->room.data;
    str.len = msg->room.len;

    sn = ngx_str_rbtree_lookup(&link->rooms, &str,
                               ngx_crc32_short(str.data, str.len));
    if (sn == NULL) {
        return;
    }

    room = (ngx_http_rooms_room_t *) sn;

    if (msg->last_id) {
        room->last_id = msg->last_id;
    }

    /* the frames are held while they are queued */

    ngx_memzero(&text, sizeof(ngx_http_rooms_text_t));

    text.payload = (u_char *) msg->payload.data;
    text.len = msg->payload.len;
    text.log = link->log;

    /*
     * A member may be kicked below (slow consumer) and leave the room;
     * the last one to leave frees it, and the sentinel compared with is
     * then only an address.
     */

    for (q = ngx_queue_head(&room->members);
         q != ngx_queue_sentinel(&room->members);
         q = next)
    {
        next = ngx_queue_next(q);
        conn = ngx_queue_data(q, ngx_http_rooms_conn_t, member);

        frame = ngx_http_rooms_text_frame(&text, conn);
        if (frame == NULL) {
            break;
        }

        ngx_http_rooms_conn_queue(conn, frame);
    }

    ngx_http_rooms_text_release(&text);
}


ngx_int_t
ngx_http_rooms_link_open(ngx_http_rooms_conn_t *conn)
{
    ngx_http_rooms_link_t  *link;

    link = &ngx_http_rooms_link;

    if (!link->up) {
        return NGX_ERROR;
    }

    if (ngx_http_rooms_link_announce(link, conn, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_rbtree_insert(&link->conns, &conn->node);
    ngx_queue_insert_tail(&link->all, &conn->queue);
    conn->registered = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_link_announce(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, ngx_uint_t flags)
{
    u_char               player[NGX_HTTP_ROOMS_PLAYER_MAX], *p;
    ngx_rooms_ipc_msg_t  msg;

    p = ngx_http_rooms_link_player(conn, player);

    ngx_memzero(&msg, sizeof(ngx_rooms_ipc_msg_t));

    msg.type = NGX_ROOMS_IPC_OPEN;
    msg.id = conn->id;
    msg.flags = flags;
    msg.room.data = conn->room_code.data;
    msg.room.len = conn->room_code.len;
    msg.name.data = conn->name.data;
    msg.name.len = conn->name.len;
    msg.player.data = player;
    msg.player.len = p - player;

    if (flags & NGX_ROOMS_IPC_F_RESUME) {
        /* where this worker's copy of the room's stream stopped */
        msg.flags |= NGX_ROOMS_IPC_F_SINCE;
        msg.since = conn->room->last_id;

    } else if (conn->has_since) {
        msg.flags |= NGX_ROOMS_IPC_F_SINCE;
        msg.since = conn->since;
    }

    if (ngx_http_rooms_link_queue(link, &msg) != NGX_OK) {
        return NGX_ERROR;
    }

    conn->announced = 1;

    return NGX_OK;
}


void
ngx_http_rooms_link_close(ngx_http_rooms_conn_t *conn)
{
    ngx_queue_t            *q;
    ngx_rooms_ipc_msg_t     msg;
    ngx_http_rooms_link_t  *link;

    link = &ngx_http_rooms_link;

    if (!conn->registered) {
        return;
    }

    ngx_http_rooms_link_unattach(link, conn);

    while (!ngx_queue_empty(&conn->unanswered)) {
        q = ngx_queue_head(&conn->unanswered);
        ngx_http_rooms_link_free_msg(link,
                              ngx_queue_data(q, ngx_http_rooms_msg_t, queue));
    }

    ngx_rbtree_delete(&link->conns, &conn->node);
    ngx_queue_remove(&conn->queue);
    conn->registered = 0;

    if (conn->announced && link->up) {
        ngx_memzero(&msg, sizeof(ngx_rooms_ipc_msg_t));

        msg.type = NGX_ROOMS_IPC_CLOSE;
        msg.id = conn->id;

        (void) ngx_http_rooms_link_queue(link, &msg);
    }

    conn->announced = 0;
}


/*
 * A client's text message: kept until the sidecar answers it, and sent
 * now if a sidecar is there, or held until one is (at most hold_time,
 * and hold_size bytes for the worker): past either bound the client gets
 * "unavailable".  Returns NGX_ERROR only when the connection must go.
 */

ngx_int_t
ngx_http_rooms_link_message(ngx_http_rooms_conn_t *conn, u_char *data,
    size_t len)
{
    ngx_http_rooms_msg_t   *m;
    ngx_http_rooms_link_t  *link;

    link = &ngx_http_rooms_link;

    if (!conn->registered) {
        ngx_http_rooms_link_unavailable(conn, data, len);
        return NGX_OK;
    }

    if (link->unanswered_size + NGX_HTTP_ROOMS_MSG_SIZE(len)
        > link->hold_size)
    {
        ngx_log_error(NGX_LOG_WARN, conn->connection->log, 0,
                      "rooms: %uz bytes of client messages wait for the "
                      "sidecar, message refused", link->unanswered_size);

        ngx_http_rooms_link_unavailable(conn, data, len);
        return NGX_OK;
    }

    /* one client may take half of it: a flood does not starve the others */

    if (conn->unanswered_size + NGX_HTTP_ROOMS_MSG_SIZE(len)
        > link->hold_size / 2)
    {
        ngx_log_error(NGX_LOG_INFO, conn->connection->log, 0,
                      "rooms: %uz bytes of this client's messages wait for "
                      "the sidecar, message refused", conn->unanswered_size);

        ngx_http_rooms_link_unavailable(conn, data, len);
        return NGX_OK;
    }

    m = ngx_alloc(NGX_HTTP_ROOMS_MSG_SIZE(len), conn->connection->log);
    if (m == NULL) {
        return NGX_ERROR;
    }

    m->conn = conn;
    m->seq = ++conn->seq;
    m->time = ngx_current_msec;
    m->sent = 0;
    m->len = len;

    /* an empty message has no buffer: memcpy() from NULL is undefined */

    if (len) {
        ngx_memcpy(m->data, data, len);
    }

    ngx_queue_insert_tail(&conn->unanswered, &m->queue);
    ngx_queue_insert_tail(&link->held, &m->held);
    link->held_n++;
    link->unanswered_size += NGX_HTTP_ROOMS_MSG_SIZE(len);
    conn->unanswered_size += NGX_HTTP_ROOMS_MSG_SIZE(len);

    ngx_http_rooms_stats->hold_bytes = link->unanswered_size;

    if (link->up && conn->announced) {
        return ngx_http_rooms_link_send_msg(link, m, 0);
    }

    ngx_http_rooms_stats->held = link->held_n;

    if (!link->hold.timer_set) {
        ngx_add_timer(&link->hold, link->hold_time);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_link_send_msg(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m, ngx_uint_t flags)
{
    ngx_rooms_ipc_msg_t  msg;

    ngx_memzero(&msg, sizeof(ngx_rooms_ipc_msg_t));

    msg.type = NGX_ROOMS_IPC_MESSAGE;
    msg.id = m->conn->id;
    msg.seq = m->seq;
    msg.flags = flags;
    msg.payload.data = m->data;
    msg.payload.len = m->len;

    if (ngx_http_rooms_link_queue(link, &msg) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the sidecar answers within hold_time, or is not answering */

    ngx_queue_remove(&m->held);
    ngx_queue_insert_tail(&link->sent, &m->held);

    if (!m->sent) {
        link->held_n--;
        ngx_http_rooms_stats->held = link->held_n;
    }

    m->sent = 1;
    m->sent_at = ngx_current_msec;

    if (!link->hold.timer_set) {
        ngx_add_timer(&link->hold, link->hold_time);
    }

    return NGX_OK;
}


/*
 * ACK: the sidecar is done with a message (published, or refused with the
 * error that came with the ACK).  Answers come mostly in order: the
 * message is near the head.
 */

static void
ngx_http_rooms_link_answered(ngx_http_rooms_link_t *link,
    ngx_http_rooms_conn_t *conn, uint64_t seq)
{
    ngx_queue_t           *q;
    ngx_http_rooms_msg_t  *m;

    for (q = ngx_queue_head(&conn->unanswered);
         q != ngx_queue_sentinel(&conn->unanswered);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_rooms_msg_t, queue);

        if (m->seq == seq) {
            ngx_http_rooms_link_free_msg(link, m);
            return;
        }
    }
}


static void
ngx_http_rooms_link_free_msg(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m)
{
    ngx_queue_remove(&m->queue);
    ngx_queue_remove(&m->held);

    if (!m->sent) {
        link->held_n--;
        ngx_http_rooms_stats->held = link->held_n;
    }

    link->unanswered_size -= NGX_HTTP_ROOMS_MSG_SIZE(m->len);
    m->conn->unanswered_size -= NGX_HTTP_ROOMS_MSG_SIZE(m->len);

    ngx_http_rooms_stats->hold_bytes = link->unanswered_size;

    ngx_http_rooms_memory_freed(NGX_HTTP_ROOMS_MSG_SIZE(m->len));

    ngx_free(m);
}


/*
 * Messages held past hold_time while no sidecar takes them: the clients
 * get "unavailable".  Held messages are in the order they came, so the
 * oldest is first.  And a sidecar that has not answered a message in
 * hold_time is not answering (it answers within its redis_timeout when
 * it works): the link is dropped and made again, so that the messages
 * go, in doubt, to whichever sidecar answers HELLO next, and new ones
 * are held, and refused, meanwhile.
 */

static void
ngx_http_rooms_link_hold_handler(ngx_event_t *ev)
{
    ngx_msec_t              age;
    ngx_queue_t            *q;
    ngx_http_rooms_msg_t   *m;
    ngx_http_rooms_link_t  *link;

    link = ev->data;

    while (!ngx_queue_empty(&link->held)) {
        q = ngx_queue_head(&link->held);
        m = ngx_queue_data(q, ngx_http_rooms_msg_t, held);

        age = ngx_current_msec - m->time;

        if (age < link->hold_time) {
            break;
        }

        ngx_log_error(NGX_LOG_INFO, m->conn->connection->log, 0,
                      "rooms: no sidecar for %Mms, message refused", age);

        ngx_http_rooms_count(NGX_HTTP_ROOMS_M_HELD_EXPIRED, 1);

        ngx_http_rooms_link_refuse(link, m);
    }

    if (link->up && !ngx_queue_empty(&link->sent)) {
        q = ngx_queue_head(&link->sent);
        m = ngx_queue_data(q, ngx_http_rooms_msg_t, held);

        age = ngx_current_msec - m->sent_at;

        if (age >= link->hold_time) {
            ngx_log_error(NGX_LOG_ERR, link->log, 0,
                          "rooms: sidecar at \"%V\" has not answered a "
                          "message for %Mms, reconnecting",
                          &link->addr->name, age);

            ngx_http_rooms_link_down(link, 1);
        }
    }

    ngx_http_rooms_link_arm_hold(link);

    ngx_http_rooms_conn_flush_dirty();
}


/*
 * The hold timer, for the oldest held message, or the oldest sent and
 * unanswered one while a sidecar has the link.
 */

static void
ngx_http_rooms_link_arm_hold(ngx_http_rooms_link_t *link)
{
    ngx_msec_t             next, age;
    ngx_http_rooms_msg_t  *m;

    next = 0;

    if (!ngx_queue_empty(&link->held)) {
        m = ngx_queue_data(ngx_queue_head(&link->held),
                           ngx_http_rooms_msg_t, held);
        age = ngx_current_msec - m->time;
        next = age < link->hold_time ? link->hold_time - age : 1;
    }

    if (link->up && !ngx_queue_empty(&link->sent)) {
        m = ngx_queue_data(ngx_queue_head(&link->sent),
                           ngx_http_rooms_msg_t, held);
        age = ngx_current_msec - m->sent_at;
        age = age < link->hold_time ? link->hold_time - age : 1;

        if (next == 0 || age < next) {
            next = age;
        }
    }

    if (link->hold.timer_set) {
        ngx_del_timer(&link->hold);
    }

    if (next) {
        ngx_add_timer(&link->hold, next);
    }
}


/*
 * Drops a held message and tells its client.  The message is freed first:
 * the answer may close a slow client, which frees its messages.
 */

static void
ngx_http_rooms_link_refuse(ngx_http_rooms_link_t *link,
    ngx_http_rooms_msg_t *m)
{
    u_char                  buf[NGX_HTTP_ROOMS_UNAVAILABLE_LEN], *p;
    ngx_http_rooms_conn_t  *conn;

    conn = m->conn;
    p = ngx_http_rooms_link_unavailable_json(buf, m->data, m->len);

    ngx_http_rooms_link_free_msg(link, m);

    ngx_http_rooms_count(NGX_HTTP_ROOMS_M_UNAVAILABLE, 1);

    ngx_http_rooms_link_send_text(conn, buf, p - buf);
}


static void
ngx_http_rooms_link_unavailable(ngx_http_rooms_conn_t *conn, u_char *data,
    size_t len)
{
    u_char  buf[NGX_HTTP_ROOMS_UNAVAILABLE_LEN], *p;

    ngx_http_rooms_count(NGX_HTTP_ROOMS_M_UNAVAILABLE, 1);

    p = ngx_http_rooms_link_unavailable_json(buf, data, len);

    ngx_http_rooms_link_send_text(conn, buf, p - buf);
}


/*
 * {"type":"error","data":{"code":"unavailable",...,"ref":R}} for a
 * client message no sidecar took; the ref is the message's, if it has
 * one.  buf holds NGX_HTTP_ROOMS_UNAVAILABLE_LEN bytes.
 */

static u_char *
ngx_http_rooms_link_unavailable_json(u_char *buf, u_char *data, size_t len)
{
    u_char  ref[NGX_ROOMS_REF_MAX], *p;
    size_t  ref_len;

    p = ngx_cpymem(buf, ngx_http_rooms_unavailable_head,
                   sizeof(ngx_http_rooms_unavailable_head) - 1);

    if (ngx_rooms_json_ref(data, len, ref, &ref_len)) {
        p = ngx_cpymem(p, ",\"ref\":\"", sizeof(",\"ref\":\"") - 1);
        p = ngx_rooms_json_escape_ascii(p, ref, ref_len);
        *p++ = '"';
    }

    *p++ = '}';
    *p++ = '}';

    return p;
}


static void
ngx_http_rooms_link_send_text(ngx_http_rooms_conn_t *conn, u_char *data,
    size_t len)
{
    if (ngx_http_rooms_conn_send(conn, NGX_ROOMS_WS_OP_TEXT, data, len)
        != NGX_OK)
    {
        ngx_http_rooms_conn_kick(conn, NGX_ROOMS_WS_CLOSE_INTERNAL, NULL, 0);
    }
}


/*
 * Encodes a frame onto the link's output; the write is posted, so that
 * frames queued in one event loop iteration leave in one writev.
 */

static ngx_int_t
ngx_http_rooms_link_queue(ngx_http_rooms_link_t *link,
    ngx_rooms_ipc_msg_t *msg)
{
    size_t                      size;
    ngx_http_rooms_link_buf_t  *lb;

    if (link->overflow) {
        /* the link is about to be closed: see below */
        return NGX_OK;
    }

    size = ngx_rooms_ipc_size(msg);
    if (size == 0) {
        ngx_log_error(NGX_LOG_ALERT, link->log, 0,
                      "rooms: cannot encode link frame type 0x%xi",
                      (ngx_int_t) msg->type);
        return NGX_ERROR;
    }

    lb = ngx_alloc(sizeof(ngx_http_rooms_link_buf_t) + size, link->log);
    if (lb == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&lb->buf, sizeof(ngx_buf_t));

    lb->buf.start = lb->data;
    lb->buf.pos = lb->data;
    lb->buf.last = ngx_rooms_ipc_encode(lb->data, msg);
    lb->buf.end = lb->buf.last;
    lb->buf.memory = 1;

    lb->cl.buf = &lb->buf;
    lb->cl.next = NULL;

    *link->last_out = &lb->cl;
    link->last_out = &lb->cl.next;
    link->out_size += size;

    if (link->out_size > NGX_HTTP_ROOMS_LINK_OUT_MAX) {

        /*
         * The sidecar is alive but not reading.  The write handler closes
         * the link and reconnects: the sidecar forgets this worker's
         * clients, the new link re-announces them.
         */

        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "rooms: sidecar at \"%V\" is not reading, %uz bytes "
                      "queued, closing the link", &link->addr->name,
                      link->out_size);

        link->overflow = 1;
    }

    if (link->connection && !link->connection->write->posted) {
        ngx_post_event(link->connection->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_rooms_link_write_handler(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_rooms_link_t  *link;

    c = ev->data;
    link = c->data;

    if (link->overflow) {
        ngx_http_rooms_link_down(link, 1);
        ngx_http_rooms_conn_flush_dirty();
        return;
    }

    if (ngx_http_rooms_link_flush(link) != NGX_OK) {
        ngx_http_rooms_link_down(link, 1);
        ngx_http_rooms_conn_flush_dirty();
    }
}


static ngx_int_t
ngx_http_rooms_link_flush(ngx_http_rooms_link_t *link)
{
    ngx_chain_t                *cl, *next;
    ngx_connection_t           *c;
    ngx_http_rooms_link_buf_t  *lb;

    c = link->connection;

    if (link->out == NULL) {
        return NGX_OK;
    }

    cl = c->send_chain(c, link->out, 0);

    if (cl == NGX_CHAIN_ERROR) {
        ngx_log_error(NGX_LOG_ERR, link->log, 0,
                      "rooms: write to sidecar failed");
        return NGX_ERROR;
    }

    while (link->out != cl) {
        next = link->out->next;
        lb = (ngx_http_rooms_link_buf_t *) link->out;

        link->out_size -= lb->buf.end - lb->buf.start;
        ngx_http_rooms_memory_freed(lb->buf.end - lb->buf.start);
        ngx_free(lb);

        link->out = next;
    }

    if (link->out == NULL) {
        link->last_out = &link->out;
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A GET /rooms (ROOMS) or a metrics page (STATS): the sidecar's reply
 * answers it, or the timeout, or the link's loss.
 */

ngx_int_t
ngx_http_rooms_link_request(ngx_http_request_t *r, ngx_uint_t type,
    ngx_msec_t timeout)
{
    ngx_rooms_ipc_msg_t        msg;
    ngx_http_cleanup_t        *cln;
    ngx_http_rooms_link_t     *link;
    ngx_http_rooms_pending_t  *pending;

    link = &ngx_http_rooms_link;

    pending = ngx_pcalloc(r->pool, sizeof(ngx_http_rooms_pending_t));
    if (pending == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pending->id = link->next_request++;
    pending->type = type;
    pending->request = r;

    ngx_memzero(&msg, sizeof(ngx_rooms_ipc_msg_t));

    msg.type = type;
    msg.id = pending->id;

    if (ngx_http_rooms_link_queue(link, &msg) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_queue_insert_tail(&link->pending, &pending->queue);

    pending->timeout.handler = ngx_http_rooms_list_timeout;
    pending->timeout.data = pending;
    pending->timeout.log = r->connection->log;

    ngx_add_timer(&pending->timeout, timeout);

    cln->handler = ngx_http_rooms_list_cleanup;
    cln->data = pending;

    r->read_event_handler = ngx_http_test_reading;
    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_rooms_list_reply(ngx_http_rooms_pending_t *pending,
    ngx_uint_t status, ngx_rooms_ipc_str_t *body)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_str_t            type;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = pending->request;
    c = r->connection;

    ngx_http_rooms_list_cleanup(pending);

    if (pending->type == NGX_ROOMS_IPC_STATS) {

        /* without the sidecar's figures, the page has the module's */

        rc = ngx_http_rooms_metrics_send(r, status == NGX_HTTP_OK ? body
                                                                  : NULL);
        ngx_http_finalize_request(r, rc);
        ngx_http_run_posted_requests(c);
        return;
    }

    if (status != NGX_HTTP_OK) {
        ngx_http_finalize_request(r, status);
        ngx_http_run_posted_requests(c);
        return;
    }

    b = ngx_create_temp_buf(r->pool, body->len ? body->len : 1);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        ngx_http_run_posted_requests(c);
        return;
    }

    b->last = ngx_cpymem(b->last, body->data, body->len);

    ngx_str_set(&type, "application/json");

    rc = ngx_http_rooms_send_buffer(r, NGX_HTTP_OK, &type, type.len, b);

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_rooms_list_timeout(ngx_event_t *ev)
{
    ngx_http_rooms_pending_t  *pending = ev->data;

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "rooms: sidecar did not answer %s in time",
                  pending->type == NGX_ROOMS_IPC_STATS ? "STATS"
                                                       : "GET /rooms");

    ngx_http_rooms_list_reply(pending, NGX_HTTP_GATEWAY_TIME_OUT, NULL);
}


static void
ngx_http_rooms_list_cleanup(void *data)
{
    ngx_http_rooms_pending_t  *pending = data;

    if (pending->request == NULL) {
        return;
    }

    if (pending->timeout.timer_set) {
        ngx_del_timer(&pending->timeout);
    }

    ngx_queue_remove(&pending->queue);
    pending->request = NULL;
}
