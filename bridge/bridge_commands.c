/*
 * fleet-bridge: publishing commands and their deadlines (SPEC section 6).
 *
 * A command is a PENDING row in PostgreSQL before it is published.  The
 * sweep claims such rows and publishes them:
 *   SELECT command_id, topic, message::text FROM fleet_commands_claim($1)
 * every second, at once when a worker sends {"op":"commands_pending"} on
 * the socket (the fast path only: a lost nudge costs one sweep's delay),
 * and right after PostgreSQL or MQTT (re)connected; one claim at a time,
 * only while MQTT is connected.  Each message is signed over the exact text
 * PostgreSQL returned (fleet_mqtt_sign; never re-serialised, so numbers stay
 * exact) and published QoS 1 on its topic (device/{id}/command).
 *
 * The PUBACK runs SELECT fleet_command_sent($1); a publish that fails, or
 * is still unacknowledged when the broker connection drops, runs
 * SELECT fleet_command_publish_failed($1) so the next sweep takes it again
 * (otherwise its claim would hold for 10 s).  A small bounded table maps
 * message ids to command ids; the claim never asks for more rows than it
 * has free slots.
 *
 * The deadline timer: SELECT fleet_commands_timeout() every second,
 * idempotent SQL (several bridges never double-act).
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "fleet_sig.h"


static const char  claim_sql[] =
    "SELECT command_id, topic, message::text FROM fleet_commands_claim($1)";
static const char  sent_sql[] = "SELECT fleet_command_sent($1)";
static const char  failed_sql[] = "SELECT fleet_command_publish_failed($1)";
static const char  timeout_sql[] = "SELECT fleet_commands_timeout()";


/* ---- the mid -> command id table ---- */

static struct cmd_inflight *
inflight_find(struct bridge_commands *cmd, int mid)
{
    size_t  i;

    for (i = 0; i < BRIDGE_CMD_INFLIGHT_MAX; i++) {
        if (cmd->inflight[i].mid == mid) {
            return &cmd->inflight[i];
        }
    }

    return NULL;
}


static void
inflight_clear(struct bridge_commands *cmd, struct cmd_inflight *slot)
{
    free(slot->command_id);
    slot->command_id = NULL;
    slot->mid = 0;
    cmd->ninflight--;
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
        b->cmd.sent++;
        return;
    }

    blog(BLOG_ERROR, "fleet_command_sent failed: %s",
         PQresultErrorMessage(res));
}


static void
failed_done(struct bridge *b, const PGresult *res, void *arg)
{
    (void) b;
    (void) arg;

    if (res != NULL && PQresultStatus(res) != PGRES_TUPLES_OK) {
        blog(BLOG_ERROR, "fleet_command_publish_failed failed: %s",
             PQresultErrorMessage(res));
    }
}


/* one command id, one call; without PostgreSQL the claim simply expires */
static void
command_call(struct bridge *b, const char *sql, const char *command_id,
    bridge_pg_cb cb)
{
    const char  *params[1];

    params[0] = command_id;

    if (bridge_pg_query(b, sql, 1, params, cb, NULL) != 0) {
        blog(BLOG_WARN, "command %s: postgresql unavailable for %s; its "
             "claim expires in 10 s", command_id, sql);
    }
}


/* ---- publishing one claimed row ---- */

static void
publish_one(struct bridge *b, const char *command_id, const char *topic,
    const char *message)
{
    int                   mid = 0;
    size_t                len = strlen(message), n;
    const char           *error;
    unsigned char        *signed_msg;
    struct cmd_inflight  *slot;

    slot = inflight_find(&b->cmd, 0);
    signed_msg = malloc(len + 78);

    if (slot == NULL || signed_msg == NULL) {
        free(signed_msg);
        blog(BLOG_ERROR, "command %s: %s", command_id,
             slot == NULL ? "too many publishes in flight" : "out of memory");
        command_call(b, failed_sql, command_id, failed_done);
        return;
    }

    n = fleet_mqtt_sign((const unsigned char *) message, len,
                        (const unsigned char *) b->opt.device_secret,
                        strlen(b->opt.device_secret), signed_msg);

    if (n == 0) {
        free(signed_msg);
        blog(BLOG_ERROR, "command %s: message is not a JSON object",
             command_id);
        command_call(b, failed_sql, command_id, failed_done);
        return;
    }

    slot->command_id = strdup(command_id);
    if (slot->command_id == NULL) {
        free(signed_msg);
        blog(BLOG_ERROR, "command %s: out of memory", command_id);
        command_call(b, failed_sql, command_id, failed_done);
        return;
    }

    error = bridge_mqtt_publish(b, topic, signed_msg, n, 1, 0, &mid);
    free(signed_msg);

    if (error != NULL || mid == 0) {
        free(slot->command_id);
        slot->command_id = NULL;
        blog(BLOG_WARN, "command %s: publish to %s failed: %s", command_id,
             topic, error ? error : "no message id");
        command_call(b, failed_sql, command_id, failed_done);
        return;
    }

    slot->mid = mid;
    b->cmd.ninflight++;
    b->cmd.published++;

    blog(BLOG_DEBUG, "command %s published to %s (%zu bytes, mid %d)",
         command_id, topic, n, mid);
}


/* ---- the sweep ---- */

static void
claim_done(struct bridge *b, const PGresult *res, void *arg)
{
    int          i, rows;
    long         limit = (long) (intptr_t) arg;
    const char  *state;

    b->cmd.sweep_busy = 0;

    if (res == NULL) {
        return;         /* claims made, if any, expire after 10 s */
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 3) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        blog(b->cmd.sweep_failing ? BLOG_DEBUG : BLOG_ERROR,
             "command sweep failed: %s%s", PQresultErrorMessage(res),
             state != NULL && strcmp(state, "42883") == 0
                 ? " (is the schema migrated?)" : "");
        b->cmd.sweep_failing = 1;
        return;
    }

    if (b->cmd.sweep_failing) {
        blog(BLOG_INFO, "command sweep succeeds again");
    }
    b->cmd.sweep_failing = 0;

    rows = PQntuples(res);

    for (i = 0; i < rows; i++) {
        if (PQgetisnull(res, i, 0)) {
            continue;
        }

        if (PQgetisnull(res, i, 1) || PQgetisnull(res, i, 2)) {
            command_call(b, failed_sql, PQgetvalue(res, i, 0), failed_done);
            continue;
        }

        publish_one(b, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                    PQgetvalue(res, i, 2));
    }

    /* a full claim: more rows may be waiting, take them at once */
    if (rows > 0 && rows >= limit) {
        b->cmd.sweep_wanted = 1;
    }
}


static int
sweep_possible(const struct bridge *b)
{
    return bridge_pg_connected(b) && bridge_mqtt_connected(b)
           && !b->cmd.sweep_busy && !b->draining && !bridge_ingest_paused(b)
           && b->opt.device_secret != NULL
           && b->cmd.ninflight < BRIDGE_CMD_INFLIGHT_MAX;
}


static void
sweep(struct bridge *b, int64_t now)
{
    char         arg[24];
    size_t       limit;
    const char  *params[1];

    limit = BRIDGE_CMD_INFLIGHT_MAX - b->cmd.ninflight;
    if (limit > BRIDGE_CMD_CLAIM_MAX) {
        limit = BRIDGE_CMD_CLAIM_MAX;
    }

    if (snprintf(arg, sizeof(arg), "%zu", limit) < 0) {
        return;
    }

    params[0] = arg;
    b->cmd.sweep_wanted = 0;
    b->cmd.next_sweep_at = now + BRIDGE_CMD_SWEEP_MS;

    /* set first: a failed send answers (NULL) inside the call */
    b->cmd.sweep_busy = 1;

    if (bridge_pg_query(b, claim_sql, 1, params, claim_done,
                        (void *) (intptr_t) limit) != 0)
    {
        b->cmd.sweep_busy = 0;
    }
}


/* ---- deadlines ---- */

static void
timeout_done(struct bridge *b, const PGresult *res, void *arg)
{
    long long    n;
    const char  *state;

    (void) arg;

    b->cmd.timeout_busy = 0;

    if (res == NULL) {
        return;
    }

    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (b->cmd.timeout_failing) {
            blog(BLOG_INFO, "command deadline check succeeds again");
        }
        b->cmd.timeout_failing = 0;

        n = (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
            ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;

        if (n > 0) {
            blog(BLOG_INFO, "%lld command%s timed out", n, n == 1 ? "" : "s");
        }
        return;
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    blog(b->cmd.timeout_failing ? BLOG_DEBUG : BLOG_ERROR,
         "command deadline check failed: %s%s", PQresultErrorMessage(res),
         state != NULL && strcmp(state, "42883") == 0
             ? " (is the schema migrated?)" : "");
    b->cmd.timeout_failing = 1;
}


static void
timeout_check(struct bridge *b, int64_t now)
{
    b->cmd.next_timeout_at = now + BRIDGE_CMD_TIMEOUT_MS;
    b->cmd.timeout_busy = 1;

    if (bridge_pg_query(b, timeout_sql, 0, NULL, timeout_done, NULL) != 0) {
        b->cmd.timeout_busy = 0;
    }
}


/* ---- loop steps and events ---- */

void
bridge_commands_wanted(struct bridge *b)
{
    b->cmd.sweep_wanted = 1;
}


void
bridge_commands_tick(struct bridge *b, int64_t now)
{
    struct bridge_commands  *cmd = &b->cmd;
    int                      pg = bridge_pg_connected(b);
    int                      mqtt = bridge_mqtt_connected(b);

    /* a (re)connect: whatever is PENDING goes out now */
    if ((pg && !cmd->pg_up) || (mqtt && !cmd->mqtt_up)) {
        cmd->sweep_wanted = 1;
    }
    if (pg && !cmd->pg_up) {
        cmd->next_timeout_at = now;
    }
    cmd->pg_up = pg;
    cmd->mqtt_up = mqtt;

    if (b->opt.device_secret == NULL && !cmd->no_secret_logged) {
        cmd->no_secret_logged = 1;
        blog(BLOG_WARN, "no device secret configured: commands are not "
             "published");
    }

    /* the claim is queued before this tick's deadline check */
    if ((cmd->sweep_wanted || now >= cmd->next_sweep_at)
        && sweep_possible(b))
    {
        sweep(b, now);
    }

    if (pg && now >= cmd->next_timeout_at && !cmd->timeout_busy) {
        timeout_check(b, now);
    }
}


void
bridge_commands_prepare(struct bridge *b, struct pollset *ps, int64_t now)
{
    if (!bridge_pg_connected(b)) {
        return;
    }

    if (sweep_possible(b)) {
        pollset_wake_at(ps, now, b->cmd.sweep_wanted ? now
                                                     : b->cmd.next_sweep_at);
    }

    if (!b->cmd.timeout_busy) {
        pollset_wake_at(ps, now, b->cmd.next_timeout_at);
    }
}


int
bridge_commands_publish_done(struct bridge *b, int mid)
{
    struct cmd_inflight  *slot;

    if (mid == 0 || (slot = inflight_find(&b->cmd, mid)) == NULL) {
        return 0;
    }

    blog(BLOG_DEBUG, "command %s: PUBACK (mid %d)", slot->command_id, mid);
    command_call(b, sent_sql, slot->command_id, sent_done);
    inflight_clear(&b->cmd, slot);

    return 1;
}


void
bridge_commands_mqtt_lost(struct bridge *b)
{
    size_t                i;
    struct cmd_inflight  *slot;

    if (b->cmd.ninflight > 0) {
        blog(BLOG_INFO, "%zu command publish%s unacknowledged by the broker: "
             "released for the next sweep", b->cmd.ninflight,
             b->cmd.ninflight == 1 ? "" : "es");
    }

    for (i = 0; i < BRIDGE_CMD_INFLIGHT_MAX && b->cmd.ninflight > 0; i++) {
        slot = &b->cmd.inflight[i];
        if (slot->mid != 0) {
            command_call(b, failed_sql, slot->command_id, failed_done);
            inflight_clear(&b->cmd, slot);
        }
    }
}


void
bridge_commands_shutdown(struct bridge *b)
{
    size_t  i;

    /* PostgreSQL is gone by now: these claims expire after 10 s */
    for (i = 0; i < BRIDGE_CMD_INFLIGHT_MAX; i++) {
        if (b->cmd.inflight[i].mid != 0) {
            inflight_clear(&b->cmd, &b->cmd.inflight[i]);
        }
    }
}
