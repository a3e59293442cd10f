
/*
 * Copyright (C) ngx_rooms developers
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_rooms_module.h"


/*
 * The "rooms_metrics" page (docs/metrics.md): the figures of every worker
 * of this nginx, from a shared memory zone, then the sidecar's, asked for
 * over the link (STATS).
 *
 * Each worker writes only its own slot of the zone, with plain stores: no
 * lock and no locked instruction on the message path, and no cache line
 * written by two workers.  A worker that exits adds its counters to the
 * zone's total and frees its slot; the slot of a worker that died is
 * taken over the same way by the next worker that starts.  The page adds
 * up the total and the slots (gauges only of workers alive) under the
 * zone's mutex, which only these three take.
 *
 * The zone is kept across reloads (same name and size): counters do not
 * reset on a reload, and old workers go on counting into it while they
 * drain.  They start from zero when nginx starts (and in the new master
 * of a binary upgrade).
 */


#define NGX_HTTP_ROOMS_SLOTS           128
#define NGX_HTTP_ROOMS_STATS_TIMEOUT   1000
#define NGX_HTTP_ROOMS_PAGE_SIZE       8192


typedef union {
    ngx_http_rooms_stats_t         stats;
    u_char                         pad[512];    /* a slot per cache line */
} ngx_http_rooms_slot_t;


typedef struct {
    ngx_http_rooms_slot_t          total;       /* of workers gone */
    ngx_http_rooms_slot_t          slots[NGX_HTTP_ROOMS_SLOTS];
} ngx_http_rooms_shm_t;


typedef struct {
    ngx_uint_t                     code;
    char                          *label;
} ngx_http_rooms_code_t;


static ngx_int_t ngx_http_rooms_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_rooms_metrics_fold(ngx_http_rooms_stats_t *total,
    ngx_http_rooms_stats_t *slot);
static ngx_uint_t ngx_http_rooms_metrics_alive(ngx_atomic_uint_t pid);
static ngx_uint_t ngx_http_rooms_metrics_index(ngx_http_rooms_code_t *codes,
    ngx_uint_t n, ngx_uint_t code);
static u_char *ngx_http_rooms_metrics_render(u_char *p, u_char *last,
    ngx_uint_t sidecar_up);
static u_char *ngx_http_rooms_metrics_family(u_char *p, u_char *last,
    char *name, char *type, char *help);
static u_char *ngx_http_rooms_metrics_sample(u_char *p, u_char *last,
    char *name, char *type, char *help, ngx_atomic_uint_t value);


/* the fixed label values; the last one is "other" */

static ngx_http_rooms_code_t  ngx_http_rooms_upgrade_codes[] = {
    { 101, "101" },
    { 400, "400" },
    { 401, "401" },
    { 403, "403" },
    { 405, "405" },
    { 426, "426" },
    { 429, "429" },
    { 500, "500" },
    { 503, "503" },
    { 0, "other" }
};


static ngx_http_rooms_code_t  ngx_http_rooms_close_codes[] = {
    { 1000, "1000" },
    { 1001, "1001" },
    { 1002, "1002" },
    { 1003, "1003" },
    { 1006, "1006" },
    { 1007, "1007" },
    { 1008, "1008" },
    { 1009, "1009" },
    { 1011, "1011" },
    { 1012, "1012" },
    { 0, "other" }
};


/* a process without a slot (the master, a worker over the slots) counts
 * here, for nobody */

static ngx_http_rooms_slot_t   ngx_http_rooms_local;
static ngx_shm_zone_t         *ngx_http_rooms_zone;

ngx_http_rooms_stats_t  *ngx_http_rooms_stats = &ngx_http_rooms_local.stats;


ngx_int_t
ngx_http_rooms_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_rooms_main_conf_t *rmcf)
{
    ngx_str_t        name;
    ngx_shm_zone_t  *shm_zone;

    ngx_str_set(&name, "rooms_metrics");

    shm_zone = ngx_shared_memory_add(cf, &name,
                                     ngx_align(sizeof(ngx_http_rooms_shm_t),
                                               ngx_pagesize)
                                     + 8 * ngx_pagesize,
                                     &ngx_http_rooms_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_rooms_metrics_init_zone;
    rmcf->metrics_zone = shm_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rooms_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t       *shpool;
    ngx_http_rooms_shm_t  *shm;

    if (data) {
        /* a reload: the counters go on */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    shm = ngx_slab_calloc(shpool, sizeof(ngx_http_rooms_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    shm_zone->data = shm;

    return NGX_OK;
}


/*
 * A worker takes a free slot, or the slot of a worker that died (its
 * counters are added to the total first).
 */

void
ngx_http_rooms_metrics_init_process(ngx_cycle_t *cycle,
    ngx_http_rooms_main_conf_t *rmcf)
{
    ngx_uint_t               i;
    ngx_slab_pool_t         *shpool;
    ngx_http_rooms_shm_t    *shm;
    ngx_http_rooms_stats_t  *slot;

    /* this cycle's zone: the master's may be of a failed reload since */

    ngx_http_rooms_zone = rmcf->metrics_zone;

    if (ngx_http_rooms_zone == NULL || ngx_http_rooms_zone->data == NULL) {
        return;
    }

    shm = ngx_http_rooms_zone->data;
    shpool = (ngx_slab_pool_t *) ngx_http_rooms_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HTTP_ROOMS_SLOTS; i++) {
        slot = &shm->slots[i].stats;

        if (slot->pid != 0 && ngx_http_rooms_metrics_alive(slot->pid)) {
            continue;
        }

        ngx_http_rooms_metrics_fold(&shm->total.stats, slot);

        slot->pid = (ngx_atomic_uint_t) ngx_pid;
        ngx_http_rooms_stats = slot;
        break;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (i == NGX_HTTP_ROOMS_SLOTS) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "rooms: no free slot in the metrics zone, this "
                      "worker is not counted");
    }
}


void
ngx_http_rooms_metrics_exit_process(void)
{
    ngx_slab_pool_t       *shpool;
    ngx_http_rooms_shm_t  *shm;

    if (ngx_http_rooms_stats == &ngx_http_rooms_local.stats) {
        return;
    }

    shm = ngx_http_rooms_zone->data;
    shpool = (ngx_slab_pool_t *) ngx_http_rooms_zone->shm.addr;

    ngx_shmtx_lock(&shpool->mutex);
    ngx_http_rooms_metrics_fold(&shm->total.stats, ngx_http_rooms_stats);
    ngx_shmtx_unlock(&shpool->mutex);

    ngx_http_rooms_stats = &ngx_http_rooms_local.stats;
}


/* adds a slot's counters to the total and empties the slot */

static void
ngx_http_rooms_metrics_fold(ngx_http_rooms_stats_t *total,
    ngx_http_rooms_stats_t *slot)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_ROOMS_COUNTERS; i++) {
        total->counter[i] += slot->counter[i];
    }

    ngx_memzero(slot, sizeof(ngx_http_rooms_stats_t));
}


static ngx_uint_t
ngx_http_rooms_metrics_alive(ngx_atomic_uint_t pid)
{
    return kill((ngx_pid_t) pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


void
ngx_http_rooms_metrics_upgrade(ngx_uint_t status)
{
    ngx_uint_t  i;

    i = ngx_http_rooms_metrics_index(ngx_http_rooms_upgrade_codes,
                                     NGX_HTTP_ROOMS_UPGRADE_CODES, status);

    ngx_http_rooms_stats->counter[NGX_HTTP_ROOMS_M_UPGRADES + i]++;
}


void
ngx_http_rooms_metrics_close(ngx_uint_t code)
{
    ngx_uint_t  i;

    i = ngx_http_rooms_metrics_index(ngx_http_rooms_close_codes,
                                     NGX_HTTP_ROOMS_CLOSE_CODES, code);

    ngx_http_rooms_stats->counter[NGX_HTTP_ROOMS_M_CLOSES + i]++;
}


static ngx_uint_t
ngx_http_rooms_metrics_index(ngx_http_rooms_code_t *codes, ngx_uint_t n,
    ngx_uint_t code)
{
    ngx_uint_t  i;

    for (i = 0; i < n - 1; i++) {
        if (codes[i].code == code) {
            break;
        }
    }

    return i;
}


/*
 * The content handler of "rooms_metrics": the sidecar's figures are
 * asked for when the link is up; without them the page says
 * rooms_sidecar_up 0.
 */

ngx_int_t
ngx_http_rooms_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_rooms_link_up()) {
        return ngx_http_rooms_link_request(r, NGX_ROOMS_IPC_STATS,
                                           NGX_HTTP_ROOMS_STATS_TIMEOUT);
    }

    return ngx_http_rooms_metrics_send(r, NULL);
}


/*
 * Sends the page: the module's figures, then the sidecar's text (NULL:
 * none came).  Returns what the content handler returns.
 */

ngx_int_t
ngx_http_rooms_metrics_send(ngx_http_request_t *r,
    ngx_rooms_ipc_str_t *sidecar)
{
    size_t      len;
    ngx_buf_t  *b;
    ngx_str_t   type;

    len = NGX_HTTP_ROOMS_PAGE_SIZE + (sidecar ? sidecar->len : 0);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_rooms_metrics_render(b->last,
                                            b->last + NGX_HTTP_ROOMS_PAGE_SIZE,
                                            sidecar != NULL);

    if (sidecar && sidecar->len) {
        b->last = ngx_cpymem(b->last, sidecar->data, sidecar->len);
    }

    ngx_str_set(&type, "text/plain; version=0.0.4");

    return ngx_http_rooms_send_buffer(r, NGX_HTTP_OK, &type,
                                      sizeof("text/plain") - 1, b);
}


static u_char *
ngx_http_rooms_metrics_render(u_char *p, u_char *last, ngx_uint_t sidecar_up)
{
    ngx_uint_t               i, n, workers;
    ngx_slab_pool_t         *shpool;
    ngx_atomic_uint_t        connections, link_up, held, hold_bytes;
    ngx_atomic_uint_t        c[NGX_HTTP_ROOMS_COUNTERS];
    ngx_http_rooms_shm_t    *shm;
    ngx_http_rooms_stats_t  *slot;

    ngx_memzero(c, sizeof(c));
    connections = 0;
    link_up = 0;
    held = 0;
    hold_bytes = 0;
    workers = 0;

    if (ngx_http_rooms_zone != NULL && ngx_http_rooms_zone->data != NULL) {
        shm = ngx_http_rooms_zone->data;
        shpool = (ngx_slab_pool_t *) ngx_http_rooms_zone->shm.addr;

        ngx_shmtx_lock(&shpool->mutex);

        for (n = 0; n < NGX_HTTP_ROOMS_COUNTERS; n++) {
            c[n] = shm->total.stats.counter[n];
        }

        for (i = 0; i < NGX_HTTP_ROOMS_SLOTS; i++) {
            slot = &shm->slots[i].stats;

            if (slot->pid == 0) {
                continue;
            }

            for (n = 0; n < NGX_HTTP_ROOMS_COUNTERS; n++) {
                c[n] += slot->counter[n];
            }

            if (!ngx_http_rooms_metrics_alive(slot->pid)) {
                continue;
            }

            workers++;
            connections += slot->connections;
            link_up += slot->link_up;
            held += slot->held;
            hold_bytes += slot->hold_bytes;
        }

        ngx_shmtx_unlock(&shpool->mutex);
    }

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_workers", "gauge",
                                      "Worker processes counted.",
                                      workers);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_connections", "gauge",
                                      "Open WebSocket connections.",
                                      connections);

    p = ngx_http_rooms_metrics_family(p, last, "rooms_upgrades_total",
                                      "counter",
                                      "WebSocket upgrade requests by the "
                                      "response status.");

    for (i = 0; i < NGX_HTTP_ROOMS_UPGRADE_CODES; i++) {
        p = ngx_slprintf(p, last, "rooms_upgrades_total{code=\"%s\"} %uA\n",
                         ngx_http_rooms_upgrade_codes[i].label,
                         c[NGX_HTTP_ROOMS_M_UPGRADES + i]);
    }

    p = ngx_http_rooms_metrics_family(p, last, "rooms_closes_total",
                                      "counter",
                                      "WebSocket connections closed, by the "
                                      "close code sent (1006: closed "
                                      "without a close frame).");

    for (i = 0; i < NGX_HTTP_ROOMS_CLOSE_CODES; i++) {
        p = ngx_slprintf(p, last, "rooms_closes_total{code=\"%s\"} %uA\n",
                         ngx_http_rooms_close_codes[i].label,
                         c[NGX_HTTP_ROOMS_M_CLOSES + i]);
    }

    p = ngx_http_rooms_metrics_sample(p, last,
                                      "rooms_messages_received_total",
                                      "counter",
                                      "Text messages received from clients.",
                                      c[NGX_HTTP_ROOMS_M_MESSAGES_IN]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_messages_sent_total",
                                      "counter",
                                      "Text frames written to clients.",
                                      c[NGX_HTTP_ROOMS_M_MESSAGES_OUT]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_received_bytes_total",
                                      "counter",
                                      "Bytes read from WebSocket clients.",
                                      c[NGX_HTTP_ROOMS_M_BYTES_IN]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_sent_bytes_total",
                                      "counter",
                                      "Bytes written to WebSocket clients, "
                                      "the 101 response included.",
                                      c[NGX_HTTP_ROOMS_M_BYTES_OUT]);

    p = ngx_http_rooms_metrics_sample(p, last,
                                      "rooms_slow_consumer_kicks_total",
                                      "counter",
                                      "Clients closed for not reading "
                                      "(rooms_output_queue_size).",
                                      c[NGX_HTTP_ROOMS_M_SLOW_KICKS]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_held_messages",
                                      "gauge",
                                      "Client messages held while no "
                                      "sidecar takes them.",
                                      held);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_hold_bytes", "gauge",
                                      "Memory of client messages the "
                                      "sidecar has not answered "
                                      "(rooms_hold_size).",
                                      hold_bytes);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_held_expired_total",
                                      "counter",
                                      "Held messages refused after "
                                      "rooms_hold_time.",
                                      c[NGX_HTTP_ROOMS_M_HELD_EXPIRED]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_unavailable_total",
                                      "counter",
                                      "Client messages answered "
                                      "\"unavailable\" by the worker.",
                                      c[NGX_HTTP_ROOMS_M_UNAVAILABLE]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_link_up", "gauge",
                                      "Workers whose link to the sidecar "
                                      "is up.",
                                      link_up);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_link_reconnects_total",
                                      "counter",
                                      "Links to the sidecar made again "
                                      "after a loss.",
                                      c[NGX_HTTP_ROOMS_M_LINK_RECONNECTS]);

    p = ngx_http_rooms_metrics_sample(p, last, "rooms_sidecar_up", "gauge",
                                      "Whether the sidecar's figures "
                                      "follow.",
                                      sidecar_up);

    return p;
}


static u_char *
ngx_http_rooms_metrics_family(u_char *p, u_char *last, char *name,
    char *type, char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


/* a family of one sample without labels */

static u_char *
ngx_http_rooms_metrics_sample(u_char *p, u_char *last, char *name,
    char *type, char *help, ngx_atomic_uint_t value)
{
    p = ngx_http_rooms_metrics_family(p, last, name, type, help);

    return ngx_slprintf(p, last, "%s %uA\n", name, value);
}
