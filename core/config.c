/* config.c -- loads and checks a job configuration (see config.h). */
#define _GNU_SOURCE
#include "config.h"
#include "json.h"
#include "sl.h"
#include "step.h"

#include <assert.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* A position in the config table, for error messages. */
struct sl_config_cur {
    lua_State *L;
    const char *file;
    char *err;
    size_t errlen;
    int failed;
};

int sl_config_fail(struct sl_config_cur *c, const char *path, const char *expected, int idx) {
    char got[96];
    int t = lua_type(c->L, idx);
    if (t == LUA_TSTRING) snprintf(got, sizeof(got), "\"%.80s\"", lua_tostring(c->L, idx));
    else if (t == LUA_TNUMBER) snprintf(got, sizeof(got), "%.14g", lua_tonumber(c->L, idx));
    else snprintf(got, sizeof(got), "%s", lua_typename(c->L, t));
    if (!c->failed)
        sl_errf(c->err, c->errlen, "%s: %s: expected %s, got %s", c->file, path,
                expected, got);
    c->failed = 1;
    return SL_ERR;
}

void sl_config_join(char *out, const char *path, const char *key) {
    snprintf(out, SL_CONFIG_PATHLEN, "%s%s%s", path, *path ? "." : "", key);
}

/* Pushes t[key] for the table at the top of the stack. */
static int field(struct sl_config_cur *c, const char *key) {
    lua_getfield(c->L, -1, key);
    return lua_type(c->L, -1);
}

/* Reads an optional string; def may be NULL. */
int sl_config_get_str(struct sl_config_cur *c, const char *path, const char *key,
                   const char *def, char **out) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TNIL) *out = def ? sl_strdup(def) : NULL;
    else if (t == LUA_TSTRING) *out = sl_strdup(lua_tostring(c->L, -1));
    else ret = sl_config_fail(c, p, "a string", -1);
    lua_pop(c->L, 1);
    return ret;
}

int sl_config_need_str(struct sl_config_cur *c, const char *path, const char *key, char **out) {
    char p[SL_CONFIG_PATHLEN];
    if (sl_config_get_str(c, path, key, NULL, out)) return SL_ERR;
    if (*out) return SL_OK;
    sl_config_join(p, path, key);
    lua_pushnil(c->L);
    sl_config_fail(c, p, "a string", -1);
    lua_pop(c->L, 1);
    return SL_ERR;
}

int sl_config_get_int(struct sl_config_cur *c, const char *path, const char *key,
                   int64_t def, int64_t min, int64_t *out) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TNIL) *out = def;
    else if (t == LUA_TNUMBER && lua_tonumber(c->L, -1) == (double)(int64_t)lua_tonumber(c->L, -1)
             && (int64_t)lua_tonumber(c->L, -1) >= min)
        *out = (int64_t)lua_tonumber(c->L, -1);
    else {
        char what[64];
        snprintf(what, sizeof(what), "an integer >= %lld", (long long)min);
        ret = sl_config_fail(c, p, what, -1);
    }
    lua_pop(c->L, 1);
    return ret;
}

int sl_config_get_bool(struct sl_config_cur *c, const char *path, const char *key, bool def,
                       bool *out) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    int t = field(c, key);
    if (t == LUA_TNIL) *out = def;
    else if (t == LUA_TBOOLEAN) *out = lua_toboolean(c->L, -1);
    else {
        sl_config_join(p, path, key);
        ret = sl_config_fail(c, p, "true or false", -1);
    }
    lua_pop(c->L, 1);
    return ret;
}

int sl_config_get_duration(struct sl_config_cur *c, const char *path, const char *key,
                        int64_t def, int64_t *out) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TNIL) *out = def;
    else if (t != LUA_TSTRING || sl_config_parse_duration(lua_tostring(c->L, -1), out))
        ret = sl_config_fail(c, p, "a duration like \"5m\"", -1);
    lua_pop(c->L, 1);
    return ret;
}

static int get_size(struct sl_config_cur *c, const char *path, const char *key,
                    size_t def, size_t *out) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TNIL) *out = def;
    else if (t == LUA_TNUMBER && lua_tonumber(c->L, -1) >= 0)
        *out = (size_t)lua_tonumber(c->L, -1);
    else if (t != LUA_TSTRING || sl_config_parse_size(lua_tostring(c->L, -1), out))
        ret = sl_config_fail(c, p, "a size like \"64KB\"", -1);
    lua_pop(c->L, 1);
    return ret;
}

/* Reads a list of strings; a single string is a list of one. */
int sl_config_get_strlist(struct sl_config_cur *c, const char *path, const char *key,
                       char ***out, size_t *n) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    sl_config_join(p, path, key);
    int t = field(c, key);
    *out = NULL;
    *n = 0;
    if (t == LUA_TSTRING) {
        *out = sl_calloc(1, sizeof(char *));
        (*out)[(*n)++] = sl_strdup(lua_tostring(c->L, -1));
    } else if (t == LUA_TTABLE) {
        size_t len = lua_objlen(c->L, -1);
        *out = sl_calloc(len + 1, sizeof(char *));
        for (size_t i = 1; i <= len; i++) {
            lua_rawgeti(c->L, -1, (int)i);
            if (lua_type(c->L, -1) != LUA_TSTRING) {
                char ip[SL_CONFIG_PATHLEN];
                snprintf(ip, sizeof(ip), "%s[%zu]", p, i);
                ret = sl_config_fail(c, ip, "a string", -1);
                lua_pop(c->L, 1);
                break;
            }
            (*out)[(*n)++] = sl_strdup(lua_tostring(c->L, -1));
            lua_pop(c->L, 1);
        }
    } else if (t != LUA_TNIL) {
        ret = sl_config_fail(c, p, "a list of strings", -1);
    }
    lua_pop(c->L, 1);
    return ret;
}

static void free_strlist(char **l, size_t n) {
    for (size_t i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* Checks that every key of the table at the top is one of allowed. */
int sl_config_one_of(struct sl_config_cur *c, const char *path, const char *key,
                     const char *const *allowed, const char *expected) {
    char p[SL_CONFIG_PATHLEN];
    int ret = SL_OK;
    lua_getfield(c->L, -1, key);
    if (!lua_isnil(c->L, -1)) {
        bool ok = false;
        for (size_t i = 0; lua_type(c->L, -1) == LUA_TSTRING && allowed[i]; i++)
            if (!strcmp(allowed[i], lua_tostring(c->L, -1))) ok = true;
        if (!ok) {
            sl_config_join(p, path, key);
            ret = sl_config_fail(c, p, expected, -1);
        }
    }
    lua_pop(c->L, 1);
    return ret;
}

int sl_config_only_keys(struct sl_config_cur *c, const char *path, const char *const *allowed) {
    int ret = SL_OK;
    lua_pushnil(c->L);
    while (lua_next(c->L, -2)) {
        bool ok = false;
        if (lua_type(c->L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(c->L, -2);
            for (size_t i = 0; allowed[i]; i++)
                if (!strcmp(allowed[i], k)) ok = true;
            if (!ok && !c->failed) {
                char p[SL_CONFIG_PATHLEN];
                sl_config_join(p, path, k);
                sl_errf(c->err, c->errlen, "%s: %s: unknown key", c->file, p);
                c->failed = 1;
            }
        } else if (!c->failed) {
            sl_errf(c->err, c->errlen, "%s: %s: keys must be names", c->file,
                    *path ? path : "(top)");
            c->failed = 1;
        }
        lua_pop(c->L, 1);
        if (!ok) { ret = SL_ERR; lua_pop(c->L, 1); break; }
    }
    return ret;
}

/* Enters t[key] if it is a table (returns 1), is absent (0), or fails. */
int sl_config_enter(struct sl_config_cur *c, const char *path, const char *key) {
    char p[SL_CONFIG_PATHLEN];
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TTABLE) return 1;
    if (t == LUA_TNIL) { lua_pop(c->L, 1); return 0; }
    sl_config_fail(c, p, "a table", -1);
    lua_pop(c->L, 1);
    return -1;
}

lua_State *sl_config_state(struct sl_config_cur *c) { return c->L; }

/* ==================== Sections ==================== */

/* Reads a table of librdkafka properties (name = string, number or boolean). */
static int get_props(struct sl_config_cur *c, const char *path, const char *key,
                     struct sl_kafka_prop **out, size_t *nout) {
    char p[SL_CONFIG_PATHLEN];
    size_t n = 0, cap = 8;
    sl_config_join(p, path, key);
    int t = field(c, key);
    if (t == LUA_TNIL) {
        lua_pop(c->L, 1);
        return SL_OK;
    }
    if (t != LUA_TTABLE) {
        sl_config_fail(c, p, "a table of librdkafka properties", -1);
        lua_pop(c->L, 1);
        return SL_ERR;
    }
    *out = sl_calloc(cap, sizeof(**out));
    lua_pushnil(c->L);
    while (lua_next(c->L, -2)) {
        if (lua_type(c->L, -2) != LUA_TSTRING ||
            (lua_type(c->L, -1) != LUA_TSTRING && lua_type(c->L, -1) != LUA_TNUMBER &&
             lua_type(c->L, -1) != LUA_TBOOLEAN)) {
            sl_config_fail(c, p, "name = string value pairs", -1);
            lua_pop(c->L, 3);
            *nout = n;
            return SL_ERR;
        }
        if (n == cap) *out = sl_realloc(*out, (cap *= 2) * sizeof(**out));
        const char *v = lua_type(c->L, -1) == LUA_TBOOLEAN
                            ? (lua_toboolean(c->L, -1) ? "true" : "false")
                            : lua_tostring(c->L, -1);
        (*out)[n].name = sl_strdup(lua_tostring(c->L, -2));
        (*out)[n].value = sl_strdup(v);
        n++;
        lua_pop(c->L, 1);
    }
    lua_pop(c->L, 1);
    *nout = n;
    return SL_OK;
}

static void free_props(struct sl_kafka_prop *props, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free((char *)props[i].name);
        free((char *)props[i].value);
    }
    free(props);
}

static int load_kafka(struct sl_config_cur *c, struct sl_config *cf) {
    static const char *keys[] = {"brokers", "group", "input", "dead_letter",
                                 "partitions", "properties", "consumer", "producer", NULL};
    int64_t parts;
    int in = sl_config_enter(c, "", "kafka");
    if (in < 0) return SL_ERR;
    if (in == 0) lua_newtable(c->L);
    if (sl_config_only_keys(c, "kafka", keys) ||
        sl_config_get_str(c, "kafka", "brokers", "embedded", &cf->kafka.brokers) ||
        sl_config_get_str(c, "kafka", "group", "sluice", &cf->kafka.group) ||
        sl_config_get_strlist(c, "kafka", "input", &cf->kafka.input, &cf->kafka.ninput) ||
        sl_config_get_str(c, "kafka", "dead_letter", "sluice.dead-letter", &cf->kafka.dead_letter) ||
        sl_config_get_int(c, "kafka", "partitions", 4, 1, &parts))
        goto bad;
    cf->kafka.partitions = (int)parts;
    cf->kafka.embedded = !strcmp(cf->kafka.brokers, "embedded");
    if (cf->kafka.ninput == 0) {
        cf->kafka.input = sl_calloc(1, sizeof(char *));
        cf->kafka.input[cf->kafka.ninput++] = sl_strdup("http.shopify-events");
    }
    if (get_props(c, "kafka", "properties", &cf->kafka.props, &cf->kafka.nprops) ||
        get_props(c, "kafka", "consumer", &cf->kafka.consumer_props, &cf->kafka.nconsumer_props) ||
        get_props(c, "kafka", "producer", &cf->kafka.producer_props, &cf->kafka.nproducer_props))
        goto bad;
    lua_pop(c->L, 1);
    return SL_OK;
bad:
    lua_pop(c->L, 1);
    return SL_ERR;
}

static int load_rules(struct sl_config_cur *c, struct sl_config *cf) {
    static const char *keys[] = {"path", "budget", "watchdog", "state_dir", "canary",
                                 "canary_last", "canary_bytes", "canary_filter_slack",
                                 "canary_filter_slack_pct", NULL};
    int64_t last, slack, pct;
    int in = sl_config_enter(c, "", "rules");
    if (in < 0) return SL_ERR;
    if (in == 0) lua_newtable(c->L);
    int ret = SL_ERR;
    if (sl_config_only_keys(c, "rules", keys) ||
        sl_config_get_strlist(c, "rules", "path", &cf->rules.path, &cf->rules.npath) ||
        sl_config_get_duration(c, "rules", "budget", 200, &cf->rules.budget_ms) ||
        sl_config_get_duration(c, "rules", "watchdog", 0, &cf->rules.watchdog_ms) ||
        sl_config_get_str(c, "rules", "state_dir", ".sluice", &cf->rules.state_dir) ||
        sl_config_get_str(c, "rules", "canary", NULL, &cf->rules.canary) ||
        sl_config_get_int(c, "rules", "canary_last", 200, 0, &last) ||
        get_size(c, "rules", "canary_bytes", 8u << 20, &cf->rules.canary_bytes) ||
        sl_config_get_int(c, "rules", "canary_filter_slack", 5, 0, &slack) ||
        sl_config_get_int(c, "rules", "canary_filter_slack_pct", 10, 0, &pct))
        goto done;
    cf->rules.canary_last = (size_t)last;
    cf->rules.canary_slack = (size_t)slack;
    cf->rules.canary_slack_pct = pct > 100 ? 100 : (int)pct;
    if (cf->rules.npath == 0) {
        cf->rules.path = sl_calloc(1, sizeof(char *));
        cf->rules.path[cf->rules.npath++] = sl_strdup("lua");
    }
    if (cf->rules.watchdog_ms == 0) cf->rules.watchdog_ms = cf->rules.budget_ms * 10;
    if (cf->rules.watchdog_ms < cf->rules.budget_ms) {
        lua_pushstring(c->L, "shorter than rules.budget");
        sl_config_fail(c, "rules.watchdog", "a duration at least rules.budget", -1);
        lua_pop(c->L, 1);
        goto done;
    }
    ret = SL_OK;
done:
    lua_pop(c->L, 1);
    return ret;
}

/* ==================== Origins ==================== */

int sl_config_normalize_origin(const char *in, char *out, size_t outlen) {
    const char *p, *host, *hend, *port = NULL;
    bool https;
    long num = -1;
    int n;

    if (strcmp(in, "*") == 0) {
        n = snprintf(out, outlen, "*");
        return n < 0 || (size_t)n >= outlen ? SL_ERR : SL_OK;
    }
    if (strncasecmp(in, "http://", 7) == 0) { https = false; p = in + 7; }
    else if (strncasecmp(in, "https://", 8) == 0) { https = true; p = in + 8; }
    else return SL_ERR;
    host = p;
    if (*p == '[') {                       /* [IPv6] */
        p++;
        while (isxdigit((unsigned char)*p) || *p == ':' || *p == '.') p++;
        if (*p != ']' || p == host + 1) return SL_ERR;
        p++;
    } else {
        while (isalnum((unsigned char)*p) || *p == '-' || *p == '.' || *p == '_') p++;
        if (p == host || *host == '.' || *host == '-') return SL_ERR;
    }
    hend = p;
    if (*p == ':') {
        char *end;
        port = ++p;
        if (!isdigit((unsigned char)*p)) return SL_ERR;
        num = strtol(port, &end, 10);
        if (num < 1 || num > 65535 || end - port > 5) return SL_ERR;
        p = end;
    }
    if (*p == '/') p++;                     /* a trailing slash only, no path */
    if (*p) return SL_ERR;
    if (num == (https ? 443 : 80)) num = -1; /* browsers leave the default out */
    n = snprintf(out, outlen, "%s://%.*s", https ? "https" : "http", (int)(hend - host), host);
    if (n < 0 || (size_t)n >= outlen) return SL_ERR;
    for (char *q = out + (https ? 8 : 7); *q; q++) *q = (char)tolower((unsigned char)*q);
    if (num > 0) {
        int m = snprintf(out + n, outlen - (size_t)n, ":%ld", num);
        if (m < 0 || (size_t)m >= outlen - (size_t)n) return SL_ERR;
    }
    return SL_OK;
}

/* Replaces each allowed origin by its normal form; names a bad entry. */
static int normalize_origins(struct sl_config_cur *c, char **origins, size_t n, bool list) {
    for (size_t i = 0; i < n; i++) {
        char norm[512], p[SL_CONFIG_PATHLEN];
        if (sl_config_normalize_origin(origins[i], norm, sizeof(norm)) != SL_OK) {
            if (list) snprintf(p, sizeof(p), "collector.allowed_origins[%zu]", i + 1);
            else snprintf(p, sizeof(p), "collector.allowed_origins");
            lua_pushstring(c->L, origins[i]);
            sl_config_fail(c, p, "an origin like \"https://shop.example\" or \"http://127.0.0.1:8080\" "
                 "(scheme://host[:port], no path)", -1);
            lua_pop(c->L, 1);
            return SL_ERR;
        }
        free(origins[i]);
        origins[i] = sl_strdup(norm);
    }
    return SL_OK;
}

static int load_collector(struct sl_config_cur *c, struct sl_config *cf) {
    static const char *keys[] = {"listen", "topic", "allowed_origins", "max_body",
                                 "ip", "ip_salt", "max_inflight", NULL};
    static const char *const ips[] = {"hash", "keep", "drop", NULL};
    int64_t inflight;
    int in = sl_config_enter(c, "", "collector");
    if (in <= 0) return in < 0 ? SL_ERR : SL_OK;
    int ret = SL_ERR;
    cf->has_collector = true;
    if (sl_config_only_keys(c, "collector", keys) ||
        sl_config_get_str(c, "collector", "listen", "127.0.0.1:9090", &cf->collector.listen) ||
        sl_config_get_str(c, "collector", "topic", "http.shopify-events", &cf->collector.topic) ||
        sl_config_get_strlist(c, "collector", "allowed_origins", &cf->collector.allowed_origins,
                    &cf->collector.norigins) ||
        get_size(c, "collector", "max_body", 65536, &cf->collector.max_body) ||
        sl_config_get_str(c, "collector", "ip", "hash", &cf->collector.ip) ||
        sl_config_one_of(c, "collector", "ip", ips, "\"hash\", \"keep\" or \"drop\"") ||
        sl_config_get_str(c, "collector", "ip_salt", NULL, &cf->collector.ip_salt) ||
        sl_config_get_int(c, "collector", "max_inflight", 10000, 1, &inflight))
        goto done;
    if (normalize_origins(c, cf->collector.allowed_origins, cf->collector.norigins,
                          field(c, "allowed_origins") == LUA_TTABLE) != SL_OK) {
        lua_pop(c->L, 1);
        goto done;
    }
    lua_pop(c->L, 1);
    cf->collector.max_inflight = (size_t)inflight;
    ret = SL_OK;
done:
    lua_pop(c->L, 1);
    return ret;
}

/* Reads pipeline[pos] (the table at the top): exactly one kind's key, then
 * the kind reads its part; a name the kind did not derive defaults to the
 * kind's name plus pos. */
static int load_step(struct sl_config_cur *c, const char *path, struct sl_step_conf *s,
                     size_t pos) {
    const char *allowed[32];
    size_t nallowed = 0, nkinds = 0;
    struct sl_buf expected = {0};
    char def[64];
    int ret = SL_ERR;

    allowed[nallowed++] = "name";
    sl_buf_adds(&expected, "exactly one of ");
    for (size_t k = 0; sl_step_kinds[k]; k++) {
        const struct sl_step_kind *kind = sl_step_kinds[k];
        allowed[nallowed++] = kind->name;
        for (size_t j = 0; kind->keys[j]; j++) allowed[nallowed++] = kind->keys[j];
        sl_buf_printf(&expected, "%s%s", k ? ", " : "", kind->synopsis);
        lua_getfield(c->L, -1, kind->name);
        if (!lua_isnil(c->L, -1)) {
            s->kind = kind;
            nkinds++;
        }
        lua_pop(c->L, 1);
    }
    assert(nallowed < sizeof(allowed) / sizeof(allowed[0]));
    allowed[nallowed] = NULL;
    if (sl_config_only_keys(c, path, allowed)) goto done;
    if (nkinds != 1) {
        s->kind = NULL;
        lua_pushvalue(c->L, -1);
        sl_config_fail(c, path, sl_buf_cstr(&expected), -1);
        lua_pop(c->L, 1);
        goto done;
    }
    s->type = s->kind->type;
    if (s->kind->load(c, path, s, pos)) goto done;
    snprintf(def, sizeof(def), "%s%zu", s->kind->name, pos);
    if (!s->name && sl_config_get_str(c, path, "name", def, &s->name)) goto done;
    ret = SL_OK;
done:
    sl_buf_free(&expected);
    return ret;
}

static int load_pipeline(struct sl_config_cur *c, struct sl_config *cf) {
    int in = sl_config_enter(c, "", "pipeline");
    if (in <= 0) return in < 0 ? SL_ERR : SL_OK;
    size_t n = lua_objlen(c->L, -1);
    cf->steps = sl_calloc(n ? n : 1, sizeof(*cf->steps));
    for (size_t i = 1; i <= n; i++) {
        char p[SL_CONFIG_PATHLEN];
        snprintf(p, sizeof(p), "pipeline[%zu]", i);
        lua_rawgeti(c->L, -1, (int)i);
        if (!lua_istable(c->L, -1)) {
            sl_config_fail(c, p, "a step table", -1);
            lua_pop(c->L, 2);
            return SL_ERR;
        }
        cf->nsteps++;
        int r = load_step(c, p, &cf->steps[i - 1], i);
        lua_pop(c->L, 1);
        if (r) { lua_pop(c->L, 1); return SL_ERR; }
        for (size_t j = 0; j + 1 < i; j++)
            if (!strcmp(cf->steps[j].name, cf->steps[i - 1].name)) {
                lua_pushstring(c->L, cf->steps[i - 1].name);
                char np[SL_CONFIG_PATHLEN];
                snprintf(np, sizeof(np), "%s.name", p);
                sl_config_fail(c, np, "a step name not used before", -1);
                lua_pop(c->L, 2);
                return SL_ERR;
            }
    }
    lua_pop(c->L, 1);
    return SL_OK;
}

/* ==================== Reload ==================== */

#define SL_CONFIG_FLAT_DEPTH 32 /* Deeper tables (or cycles) are one leaf. */

/* Keys a SIGHUP may change: a path equal to one of these, or below it; "*"
 * stands for a step's position. */
static const char *const reloadable[] = {
    "pipeline[*].params", "pipeline[*].http.params", "pipeline[*].model.params",
    "rules.budget", "rules.canary", "rules.canary_filter_slack",
    "rules.canary_filter_slack_pct", "notes", NULL};

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void add_leaf(struct sl_config *cf, const char *path, uint64_t hash) {
    if ((cf->nleaves & (cf->nleaves + 1)) == 0)   /* full at 0, 1, 3, 7, ... */
        cf->leaves = sl_realloc(cf->leaves, (cf->nleaves * 2 + 2) * sizeof(*cf->leaves));
    cf->leaves[cf->nleaves].path = sl_strdup(path);
    cf->leaves[cf->nleaves++].hash = hash;
}

/* Adds the value at idx and, for a table, everything under it. */
static void flatten(lua_State *L, int idx, const char *path, int depth, struct sl_config *cf) {
    uint64_t h = 14695981039346656037ull;
    int t = lua_type(L, idx);
    h = fnv1a(h, &t, sizeof(t));
    if (t == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, idx, &n);
        h = fnv1a(h, v, n);
    } else if (t == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, idx);
        h = fnv1a(h, &d, sizeof(d));
    } else if (t == LUA_TBOOLEAN) {
        int b = lua_toboolean(L, idx);
        h = fnv1a(h, &b, sizeof(b));
    }
    if (*path) add_leaf(cf, path, h);
    if (t != LUA_TTABLE || depth >= SL_CONFIG_FLAT_DEPTH || !lua_checkstack(L, 4)) return;
    lua_pushnil(L);
    while (lua_next(L, idx)) {                       /* k v */
        char p[SL_CONFIG_PATHLEN];
        if (lua_type(L, -2) == LUA_TSTRING)
            snprintf(p, sizeof(p), "%s%s%s", path, *path ? "." : "", lua_tostring(L, -2));
        else if (lua_type(L, -2) == LUA_TNUMBER)
            snprintf(p, sizeof(p), "%s[%.14g]", path, lua_tonumber(L, -2));
        else
            snprintf(p, sizeof(p), "%s[%s]", path, luaL_typename(L, -2));
        flatten(L, lua_gettop(L), p, depth + 1, cf);
        lua_pop(L, 1);                               /* k */
    }
}

static int leaf_cmp(const void *a, const void *b) {
    return strcmp(((const struct sl_config_leaf *)a)->path, ((const struct sl_config_leaf *)b)->path);
}

/* Is path one of the reloadable keys or below one? */
static bool is_reloadable(const char *path) {
    for (size_t i = 0; reloadable[i]; i++) {
        const char *p = path, *r = reloadable[i];
        while (*r) {
            if (*r == '*') {
                if (!isdigit((unsigned char)*p)) break;
                while (isdigit((unsigned char)*p)) p++;
                r++;
            } else if (*r == *p) {
                r++;
                p++;
            } else {
                break;
            }
        }
        if (!*r && (!*p || *p == '.' || *p == '[')) return true;
    }
    return false;
}

bool sl_config_needs_restart(const struct sl_config *old, const struct sl_config *new_cf,
                             char *key, size_t keylen) {
    size_t i = 0, j = 0;
    while (i < old->nleaves || j < new_cf->nleaves) {
        const struct sl_config_leaf *a = i < old->nleaves ? &old->leaves[i] : NULL;
        const struct sl_config_leaf *b = j < new_cf->nleaves ? &new_cf->leaves[j] : NULL;
        int d = !a ? 1 : !b ? -1 : strcmp(a->path, b->path);
        const char *path = d <= 0 ? a->path : b->path;
        const char *what = d < 0 ? "removed" : d > 0 ? "added" : "changed";
        bool differs = d != 0 || a->hash != b->hash;
        if (d <= 0) i++;
        if (d >= 0) j++;
        if (differs && !is_reloadable(path)) {
            sl_errf(key, keylen, "%s %s", path, what);
            return true;
        }
    }
    return false;
}

/* env(NAME, DEFAULT): the environment variable, or DEFAULT when unset or empty. */
static int cfg_env(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *v = getenv(name);
    if (v && *v) lua_pushstring(L, v);
    else lua_settop(L, 2);
    return 1;
}

struct sl_config *sl_config_load(const char *file, char *err, size_t errlen) {
    static const char *top[] = {"kafka", "rules", "collector", "admin", "pipeline",
                                "max_inflight", "shutdown_timeout", "notes", NULL};
    struct sl_config *cf = sl_calloc(1, sizeof(*cf));
    struct sl_config_cur c = {0};
    lua_State *L = luaL_newstate();
    int64_t n;

    c.L = L;
    c.file = file;
    c.err = err;
    c.errlen = errlen;
    cf->file = sl_strdup(file);
    luaL_openlibs(L);
    sl_json_init(L);
    lua_pushcfunction(L, cfg_env);
    lua_setglobal(L, "env");
    if (luaL_loadfile(L, file) || lua_pcall(L, 0, 1, 0)) {
        sl_errf(err, errlen, "%s", lua_tostring(L, -1));
        goto fail;
    }
    if (!lua_istable(L, -1)) {
        sl_config_fail(&c, "(top)", "the file to return a table", -1);
        goto fail;
    }
    if (sl_config_only_keys(&c, "", top) || load_kafka(&c, cf) || load_rules(&c, cf) ||
        load_collector(&c, cf) || sl_config_get_str(&c, "", "admin", NULL, &cf->admin_listen) ||
        sl_config_get_strlist(&c, "", "notes", &cf->notes, &cf->nnotes) ||
        sl_config_get_int(&c, "", "max_inflight", 10000, 1, &n))
        goto fail;
    cf->max_inflight = (size_t)n;
    if (sl_config_get_duration(&c, "", "shutdown_timeout", 10000, &cf->shutdown_ms) ||
        load_pipeline(&c, cf))
        goto fail;
    if (!cf->has_collector && cf->nsteps == 0) {
        sl_errf(err, errlen, "%s: needs a pipeline, a collector or both", file);
        goto fail;
    }
    flatten(L, lua_gettop(L), "", 0, cf);
    qsort(cf->leaves, cf->nleaves, sizeof(*cf->leaves), leaf_cmp);
    lua_close(L);
    return cf;
fail:
    lua_close(L);
    sl_config_destroy(cf);
    return NULL;
}

void sl_config_destroy(struct sl_config *cf) {
    if (!cf) return;
    free(cf->file);
    free(cf->kafka.brokers);
    free(cf->kafka.group);
    free_strlist(cf->kafka.input, cf->kafka.ninput);
    free(cf->kafka.dead_letter);
    free_props(cf->kafka.props, cf->kafka.nprops);
    free_props(cf->kafka.consumer_props, cf->kafka.nconsumer_props);
    free_props(cf->kafka.producer_props, cf->kafka.nproducer_props);
    free_strlist(cf->rules.path, cf->rules.npath);
    free(cf->rules.state_dir);
    free(cf->collector.listen);
    free(cf->collector.topic);
    free_strlist(cf->collector.allowed_origins, cf->collector.norigins);
    free(cf->collector.ip);
    free(cf->collector.ip_salt);
    free(cf->admin_listen);
    free_strlist(cf->notes, cf->nnotes);
    for (size_t i = 0; i < cf->nsteps; i++) {
        struct sl_step_conf *s = &cf->steps[i];
        if (s->kind) s->kind->unload(s);
        free(s->name);
    }
    free(cf->steps);
    for (size_t i = 0; i < cf->nleaves; i++) free(cf->leaves[i].path);
    free(cf->leaves);
    free(cf->rules.canary);
    free(cf);
}

struct sl_kafka_prop *sl_config_kafka_props(const struct sl_config *c, bool consumer,
                                            size_t *n) {
    const struct sl_kafka_prop *extra = consumer ? c->kafka.consumer_props : c->kafka.producer_props;
    size_t nextra = consumer ? c->kafka.nconsumer_props : c->kafka.nproducer_props;
    struct sl_kafka_prop *m = sl_calloc(c->kafka.nprops + nextra + 1, sizeof(*m));
    if (c->kafka.nprops) memcpy(m, c->kafka.props, c->kafka.nprops * sizeof(*m));
    if (nextra) memcpy(m + c->kafka.nprops, extra, nextra * sizeof(*m));
    *n = c->kafka.nprops + nextra;
    return m;
}

int sl_config_step_index(const struct sl_config *c, const char *name) {
    for (size_t i = 0; i < c->nsteps; i++)
        if (!strcmp(c->steps[i].name, name)) return (int)i;
    return -1;
}

/* ==================== Units ==================== */

int sl_config_parse_duration(const char *s, int64_t *ms) {
    int64_t total = 0;
    const char *p = s;
    if (!s || !*s) return SL_ERR;
    while (*p) {
        if (!isdigit((unsigned char)*p)) return SL_ERR;
        char *end;
        long long v = strtoll(p, &end, 10);
        int64_t unit;
        if (!strncmp(end, "ms", 2)) { unit = 1; end += 2; }
        else if (*end == 's') { unit = 1000; end++; }
        else if (*end == 'm') { unit = 60000; end++; }
        else if (*end == 'h') { unit = 3600000; end++; }
        else if (*end == 'd') { unit = 86400000; end++; }
        else return SL_ERR;
        if (v < 0 || v > INT64_MAX / unit / 2) return SL_ERR;
        total += v * unit;
        p = end;
    }
    *ms = total;
    return SL_OK;
}

int sl_config_parse_size(const char *s, size_t *bytes) {
    static const struct { const char *suffix; size_t mult; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1000}, {"KiB", 1024}, {"MB", 1000000},
        {"MiB", 1u << 20}, {"GB", 1000000000}, {"GiB", 1u << 30}, {NULL, 0}};
    char *end;
    if (!s || !isdigit((unsigned char)*s)) return SL_ERR;
    unsigned long long v = strtoull(s, &end, 10);
    for (size_t i = 0; units[i].suffix; i++)
        if (!strcmp(end, units[i].suffix)) {
            *bytes = (size_t)v * units[i].mult;
            return SL_OK;
        }
    return SL_ERR;
}
