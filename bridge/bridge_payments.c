/*
 * fleet-bridge: payment statuses to devices and payment expiry (SPEC
 * section 8, seed 004 "MQTT Payment Status").
 *
 * Every status change of a payment (webhook, admin, expiry) is a row in
 * payment_events, written with the change.  The sweep claims unpublished
 * rows and publishes them, the way bridge_commands.c publishes commands:
 *   SELECT event_id, topic, message FROM fleet_payment_events_claim($1)
 * every second, at once when a worker sends {"op":"payments_pending"} on
 * the socket (the fast path only), after the expiry timer cancelled
 * payments, and right after PostgreSQL or MQTT (re)connected; one claim at
 * a time, only while MQTT is connected.  Each message is signed over the
 * exact text PostgreSQL returned (fleet_mqtt_sign) and published QoS 1, not
 * retained, on device/{chargeId}/payment-status.
 *
 * The PUBACK runs SELECT fleet_payment_event_published($1); a publish that
 * fails, or is unacknowledged when the broker connection drops, runs
 * SELECT fleet_payment_event_publish_failed($1) so the next sweep takes it
 * again (otherwise its claim holds for 10 s).
 *
 * The expiry timer: SELECT fleet_payments_expire() every second, idempotent
 * SQL (several bridges never double-act): PENDING payments past their
 * expiry become CANCELLED, each with its event row to publish.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "fleet_sig.h"


static const char  claim_sql[] =
    "SELECT event_id, topic, message FROM fleet_payment_events_claim($1)";
static const char  sent_sql[] = "SELECT fleet_payment_event_published($1)";
static const char  failed_sql[] =
    "SELECT fleet_payment_event_publish_failed($1)";
static const char  expire_sql[] = "SELECT fleet_payments_expire()";


/* ---- the mid -> event id table ---- */

static struct pay_inflight *
inflight_find(struct bridge_payments *pay, int mid)
{
    size_t  i;

    for (i = 0; i < BRIDGE_PAY_INFLIGHT_MAX; i++) {
        if (pay->inflight[i].mid == mid) {
            return &pay->inflight[i];
        }
    }

    return NULL;
}


static void
inflight_clear(struct bridge_payments *pay, struct pay_inflight *slot)
{
    free(slot->event_id);
    slot->event_id = NULL;
    slot->mid = 0;
    pay->ninflight--;
}


/* ---- follow-up queries ---- */

static void
sent_done(struct bridge *b, const PGresult *res, void *arg)
{
    (void) arg;

    if (res == NULL) {
        return;                 /* connection lost; the claim expires */
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        b->pay.sent++;
        return;
    }

    blog(BLOG_ERROR, "fleet_payment_event_published failed: %s",
         PQresultErrorMessage(res));
}


static void
failed_done(struct bridge *b, const PGresult *res, void *arg)
{
    (void) b;
    (void) arg;

    if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK) {
        blog(BLOG_ERROR, "fleet_payment_event_publish_failed failed: %s",
             PQresultErrorMessage(res));
    }
}


/* one event id, one call; without PostgreSQL the claim simply expires */
static void
event_call(struct bridge *b, const char *sql, const char *event_id,
    bridge_pg_cb cb)
{
    const char  *params[1];

    params[0] = event_id;

    if (bridge_pg_query(b, sql, 1, params, cb, NULL) != 0) {
        blog(BLOG_WARN, "payment event %s: postgresql unavailable for %s; "
             "its claim expires in 10 s", event_id, sql);
    }
}


/* ---- publishing one claimed row ---- */

static void
publish_one(struct bridge *b, const char *event_id, const char *topic,
    const char *message)
{
    int                   mid = 0;
    size_t                len = strlen(message), n;
    const char           *error;
    unsigned char        *signed_msg;
    struct pay_inflight  *slot;

    slot = inflight_find(&b->pay, 0);
    signed_msg = malloc(len + 78);

    if (slot == NULL || signed_msg == NULL) {
        free(signed_msg);
        blog(BLOG_ERROR, "payment event %s: %s", event_id,
             slot == NULL ? "too many publishes in flight" : "out of memory");
        event_call(b, failed_sql, event_id, failed_done);
        return;
    }

    n = fleet_mqtt_sign((const unsigned char *) message, len,
                        (const unsigned char *) b->opt.device_secret,
                        strlen(b->opt.device_secret), signed_msg);

    if (n == 0) {
        free(signed_msg);
        blog(BLOG_ERROR, "payment event %s: message is not a JSON object",
             event_id);
        event_call(b, failed_sql, event_id, failed_done);
        return;
    }

    slot->event_id = strdup(event_id);
    if (slot->event_id == NULL) {
        free(signed_msg);
        blog(BLOG_ERROR, "payment event %s: out of memory", event_id);
        event_call(b, failed_sql, event_id, failed_done);
        return;
    }

    error = bridge_mqtt_publish(b, topic, signed_msg, n, 1, 0, &mid);
    free(signed_msg);

    if (error != NULL || mid == 0) {
        free(slot->event_id);
        slot->event_id = NULL;
        blog(BLOG_WARN, "payment event %s: publish to %s failed: %s",
             event_id, topic, error ? error : "no message id");
        event_call(b, failed_sql, event_id, failed_done);
        return;
    }

    slot->mid = mid;
    b->pay.ninflight++;
    b->pay.published++;

    blog(BLOG_DEBUG, "payment event %s published to %s (%zu bytes, mid %d)",
         event_id, topic, n, mid);
}


/* ---- the sweep ---- */

static void
claim_done(struct bridge *b, const PGresult *res, void *arg)
{
    int          i, rows;
    long         limit = (long) (intptr_t) arg;
    const char  *state;

    b->pay.sweep_busy = 0;

    if (res == NULL) {
        return;         /* claims made, if any, expire after 10 s */
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 3) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        blog(b->pay.sweep_failing ? BLOG_DEBUG : BLOG_ERROR,
             "payment event sweep failed: %s%s", PQresultErrorMessage(res),
             state != NULL && strcmp(state, "42883") == 0
                 ? " (is the schema migrated?)" : "");
        b->pay.sweep_failing = 1;
        return;
    }

    if (b->pay.sweep_failing) {
        blog(BLOG_INFO, "payment event sweep succeeds again");
    }
    b->pay.sweep_failing = 0;

    rows = PQntuples(res);

    for (i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, 0)) {
            continue;
        }

        if (PQgetisnull(res, i, 1) || PQgetisnull(res, i, 2)) {
            event_call(b, failed_sql, PQgetvalue(res, i, 0), failed_done);
            continue;
        }

        publish_one(b, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                    PQgetvalue(res, i, 2));
    }

    /* a full claim: more rows may be waiting, take them at once */
    if (rows > 0 && rows >= limit) {
        b->pay.sweep_wanted = 1;
    }
}


static int
sweep_possible(const struct bridge *b)
{
    return bridge_pg_connected(b) && bridge_mqtt_connected(b)
           && !b->pay.sweep_busy && !b->draining && !bridge_ingest_paused(b)
           && b->opt.device_secret != NULL
           && b->pay.ninflight < BRIDGE_PAY_INFLIGHT_MAX;
}


static void
sweep(struct bridge *b, int64_t now)
{
    char         arg[24];
    size_t       limit;
    const char  *params[1];

    limit = BRIDGE_PAY_INFLIGHT_MAX - b->pay.ninflight;
    if (limit > BRIDGE_PAY_CLAIM_MAX) {
        limit = BRIDGE_PAY_CLAIM_MAX;
    }

    if (snprintf(arg, sizeof(arg), "%zu", limit) < 0) {
        return;
    }

    params[0] = arg;
    b->pay.sweep_wanted = 0;
    b->pay.next_sweep_at = now + BRIDGE_PAY_SWEEP_MS;

    /* set first: a failed send answers (NULL) inside the call */
    b->pay.sweep_busy = 1;

    if (bridge_pg_query(b, claim_sql, 1, params, claim_done,
                        (void *) (intptr_t) limit) != 0)
    {
        b->pay.sweep_busy = 0;
    }
}


/* ---- expiry ---- */

static void
expire_done(struct bridge *b, const PGresult *res, void *arg)
{
    long long    n;
    const char  *state;

    (void) arg;

    b->pay.expire_busy = 0;

    if (res == NULL) {
        return;
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (b->pay.expire_failing) {
            blog(BLOG_INFO, "payment expiry check succeeds again");
        }
        b->pay.expire_failing = 0;

        n = (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
            ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;

        if (n > 0) {
            b->pay.expired += (uint64_t) n;
            /* their CANCELLED events go out now, not at the next sweep */
            b->pay.sweep_wanted = 1;
            blog(BLOG_INFO, "%lld payment%s expired (CANCELLED)", n,
                 n == 1 ? "" : "s");
        }
        return;
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    blog(b->pay.expire_failing ? BLOG_DEBUG : BLOG_ERROR,
         "payment expiry check failed: %s%s", PQresultErrorMessage(res),
         state != NULL && strcmp(state, "42883") == 0
             ? " (is the schema migrated?)" : "");
    b->pay.expire_failing = 1;
}


static void
expire_check(struct bridge *b, int64_t now)
{
    b->pay.next_expire_at = now + BRIDGE_PAY_EXPIRE_MS;
    b->pay.expire_busy = 1;

    if (bridge_pg_query(b, expire_sql, 0, NULL, expire_done, NULL) != 0) {
        b->pay.expire_busy = 0;
    }
}


/* ---- loop steps and events ---- */

void
bridge_payments_wanted(struct bridge *b)
{
    b->pay.sweep_wanted = 1;
}


void
bridge_payments_tick(struct bridge *b, int64_t now)
{
    struct bridge_payments  *pay = &b->pay;
    int                      pg = bridge_pg_connected(b);
    int                      mqtt = bridge_mqtt_connected(b);

    /* a (re)connect: whatever is unpublished goes out now */
    if ((pg && !pay->pg_up) || (mqtt && !pay->mqtt_up)) {
        pay->sweep_wanted = 1;
    }
    if (pg && !pay->pg_up) {
        pay->next_expire_at = now;
    }
    pay->pg_up = pg;
    pay->mqtt_up = mqtt;

    if (b->opt.device_secret == NULL && !pay->no_secret_logged) {
        pay->no_secret_logged = 1;
        blog(BLOG_WARN, "no device secret configured: payment statuses are "
             "not published (payments still expire)");
    }

    if ((pay->sweep_wanted || now >= pay->next_sweep_at)
        && sweep_possible(b))
    {
        sweep(b, now);
    }

    /* expiry needs PostgreSQL only: a payment expires with MQTT down, and
     * its event waits for the broker */
    if (pg && now >= pay->next_expire_at && !pay->expire_busy && !b->draining)
    {
        expire_check(b, now);
    }
}


void
bridge_payments_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    if (!bridge_pg_connected(b)) {
        return;
    }

    if (sweep_possible(b)) {
        pollset_wake_at(ps, now, b->pay.sweep_wanted ? now
                                                     : b->pay.next_sweep_at);
    }

    if (!b->pay.expire_busy && !b->draining) {
        pollset_wake_at(ps, now, b->pay.next_expire_at);
    }
}


int
bridge_payments_publish_done(struct bridge *b, int mid)
{
    struct pay_inflight  *slot;

    if (mid == 0 || (slot = inflight_find(&b->pay, mid)) == NULL) {
        return 0;
    }

    blog(BLOG_DEBUG, "payment event %s: PUBACK (mid %d)", slot->event_id,
         mid);
    event_call(b, sent_sql, slot->event_id, sent_done);
    inflight_clear(&b->pay, slot);

    return 1;
}


void
bridge_payments_mqtt_lost(struct bridge *b)
{
    size_t                i;
    struct pay_inflight  *slot;

    if (b->pay.ninflight > 0) {
        blog(BLOG_INFO, "%zu payment-status publish%s unacknowledged by the "
             "broker: released for the next sweep", b->pay.ninflight,
             b->pay.ninflight == 1 ? "" : "es");
    }

    for (i = 0; i < BRIDGE_PAY_INFLIGHT_MAX && b->pay.ninflight > 0; i++) {
        slot = &b->pay.inflight[i];
        if (slot->mid != 0) {
            event_call(b, failed_sql, slot->event_id, failed_done);
            inflight_clear(&b->pay, slot);
        }
    }
}


void
bridge_payments_shutdown(struct bridge *b)
{
    size_t  i;

    /* PostgreSQL is gone by now: these claims expire after 10 s */
    for (i = 0; i < BRIDGE_PAY_INFLIGHT_MAX; i++) {
        if (b->pay.inflight[i].mid != 0) {
            inflight_clear(&b->pay, &b->pay.inflight[i]);
        }
    }
}
