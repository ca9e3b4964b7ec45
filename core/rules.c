/* rules.c -- the rules VM, budgets and the watchdog (see rules.h). */
#define _GNU_SOURCE
#include "rules.h"
#include "json.h"
#include "lalloc.h"
#include "lazy.h"
#include "metrics.h"
#include "step.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>

static void monitor_start(void);
static void monitor_load(lua_State *L, const struct sl_step_conf *s, int64_t limit_ms);
static void monitor_done(lua_State *L);

struct sl_rules {
    lua_State *L;
    struct sl_lalloc *alloc;  /* L's memory (lalloc.h), freed after L */
    int refcount;
    const struct sl_config *cf;
    int *fn_refs;            /* per step: the function, LUA_NOREF for non-lua steps */
    int *params_refs;        /* per step: the params table */
    int *rule_refs;          /* per step and slot: functions rule_fn names */
    int traceback_ref;
    int kafka_ref;           /* the string "kafka", made once (is_context) */
    bool interpreted;        /* JIT off and flushed (restore records) */
    char version[17];
    struct sl_config *owned_cf; /* a reload's config, freed with the VM */
};

/* ==================== The sluice module ==================== */

static int sl_lua_now(lua_State *L) {
    lua_pushnumber(L, (lua_Number)sl_now_ms());
    return 1;
}

static int sl_lua_log(lua_State *L) {
    static const char *levels[] = {"debug", "info", "warn", "error", NULL};
    int level = luaL_checkoption(L, 1, "info", levels);
    const char *msg = luaL_checkstring(L, 2);
    lua_Debug ar;
    char site[128] = "lua";
    /* Rate-limited per calling line of the rule, not as one site. */
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(site, sizeof(site), "%s:%d", ar.short_src, ar.currentline);
    sl_log_site((enum sl_log_level)level, "lua", site, "%s", msg);
    return 0;
}

/* print() of a rule: a log line (stderr) rate-limited per calling line,
 * never stdout, where sluice test writes its trace. */
static int sl_lua_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    lua_Debug ar;
    char site[128] = "lua";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(site, sizeof(site), "%s:%d", ar.short_src, ar.currentline);
    lua_getglobal(L, "tostring");                /* args.. tostring */
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, n + 1);
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);                       /* args.. tostring s */
        if (!lua_isstring(L, -1)) return luaL_error(L, "'tostring' must return a string to 'print'");
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);                         /* args.. tostring text */
    sl_log_site(SL_LOG_INFO, "print", site, "%s: %s", site, lua_tostring(L, -1));
    return 0;
}

static const luaL_Reg sluice_lib[] = {
    {"json_decode", sl_lua_json_decode},
    {"json_encode", sl_lua_json_encode},
    {"array", sl_lua_array},
    {"now", sl_lua_now},
    {"log", sl_lua_log},
    {NULL, NULL},
};

/* Registers `sluice` in package.loaded so that require "sluice" finds it
 * before any Lua file of that name. */
static void open_sluice(lua_State *L, const char *version) {
    lua_getglobal(L, "package");                 /* package */
    lua_getfield(L, -1, "loaded");               /* package loaded */
    lua_newtable(L);                             /* package loaded sluice */
    luaL_register(L, NULL, sluice_lib);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    sl_json_push_array_mt(L);
    lua_setfield(L, -2, "array_mt");
    lua_pushstring(L, version);
    lua_setfield(L, -2, "version");
    lua_setfield(L, -2, "sluice");               /* package loaded */
    lua_pop(L, 2);
    lua_pushcfunction(L, sl_lua_print);
    lua_setglobal(L, "print");
}

/* ==================== Version ==================== */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static int cmpstr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the .lua files under dir, recursively. */
static void collect(const char *dir, char ***files, size_t *n, size_t *cap) {
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d))) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) collect(path, files, n, cap);
        else if (strlen(e->d_name) > 4 && !strcmp(e->d_name + strlen(e->d_name) - 4, ".lua")) {
            if (*n == *cap) *files = sl_realloc(*files, (*cap = *cap * 2 + 8) * sizeof(char *));
            (*files)[(*n)++] = sl_strdup(path);
        }
    }
    closedir(d);
}

static uint64_t hash_file(uint64_t h, const char *path) {
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t k;
    if (!f) return h;
    while ((k = fread(buf, 1, sizeof(buf), f)) > 0) h = fnv(h, buf, k);
    fclose(f);
    return h;
}

/* Hashes every .lua file of the rules directories: each file's path
 * relative to its directory, then its bytes. The version names the rules'
 * contents and layout, not where the directory lives. */
static void rules_version(const struct sl_config *cf, char out[17]) {
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < cf->rules.npath; i++) {
        char **files = NULL;
        size_t n = 0, cap = 0, skip = strlen(cf->rules.path[i]) + 1;
        collect(cf->rules.path[i], &files, &n, &cap);
        qsort(files, n, sizeof(char *), cmpstr);
        h = fnv(h, &i, sizeof(i));
        for (size_t j = 0; j < n; j++) {
            h = fnv(h, files[j] + skip, strlen(files[j] + skip) + 1);
            h = hash_file(h, files[j]);
            free(files[j]);
        }
        free(files);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* ==================== Loading ==================== */

/* Writes the error of loading step s's module from require's message m on
 * one line, file:line first when it has one (editors jump to it):
 * "f.lua:8: 'then' expected near 'x' (step S: error loading module M)",
 * else "step S: <message>". */
static void load_error(char *err, size_t errlen, const struct sl_step_conf *s,
                       const char *module, const char *m) {
    char msg[SL_ERRLEN];
    size_t j = 0;
    const char *lead = m ? m : "(no message)", *p;
    bool loading = !strncmp(lead, "error loading module ", 21) && strchr(lead, '\n');
    if (loading) lead = strchr(lead, '\n') + 1;
    for (p = lead; *p && j + 2 < sizeof(msg); p++) {
        if (*p == '\n') { msg[j++] = ';'; msg[j++] = ' '; }
        else if (*p != '\t') msg[j++] = *p;
    }
    msg[j] = '\0';
    /* "path:digits:" at the start */
    p = msg + strcspn(msg, ": ");
    bool has_line = p > msg && *p == ':' && p[1] >= '0' && p[1] <= '9';
    if (has_line) {
        for (p++; *p >= '0' && *p <= '9'; p++) {}
        has_line = *p == ':';
    }
    if (has_line && loading)
        sl_errf(err, errlen, "%s (step %s: error loading module %s)", msg, s->name, module);
    else if (has_line) sl_errf(err, errlen, "%s (step %s, module %s)", msg, s->name, module);
    else sl_errf(err, errlen, "step %s: %s", s->name, msg);
}

/* A table raised by a rule (a failure object) is handed back as it is, so
 * the step can read it; any other error gets its traceback. */
static int traceback(lua_State *L) {
    if (lua_istable(L, 1)) return 1;
    const char *msg = lua_tostring(L, 1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void set_path(lua_State *L, const struct sl_config *cf) {
    struct sl_buf b = {0};
    for (size_t i = 0; i < cf->rules.npath; i++)
        sl_buf_printf(&b, "%s/?.lua;%s/?/init.lua;", cf->rules.path[i], cf->rules.path[i]);
    lua_getglobal(L, "package");
    lua_pushstring(L, sl_buf_cstr(&b));
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    sl_buf_free(&b);
}

/* Resolves step i: require(module)[fn], params decoded. */
static int load_step(struct sl_rules *r, size_t i, char *err, size_t errlen) {
    lua_State *L = r->L;
    const struct sl_step_conf *s = &r->cf->steps[i];
    char jerr[256];
    int ret = SL_ERR;
    int top = lua_gettop(L);

    lua_getglobal(L, "require");                          /* require */
    lua_pushstring(L, s->module);                         /* require module */
    /* A module's top-level code runs under the monitor too, bounded by
     * rules.watchdog, with the JIT off so that the hook always fires. */
    monitor_load(L, s, r->cf->rules.watchdog_ms);
    int rc = lua_pcall(L, 1, 1, 0);                       /* mod|err */
    monitor_done(L);
    if (rc) {
        /* require's message spans lines ("error loading module m from file
         * f:\n\tf:3: msg"): one line keeps file:line greppable in logs. */
        load_error(err, errlen, s, s->module, lua_tostring(L, -1));
        goto done;
    }
    if (!lua_istable(L, -1)) {
        sl_errf(err, errlen, "step %s: module %s must return a table of functions, got %s",
                s->name, s->module, luaL_typename(L, -1));
        goto done;
    }
    lua_getfield(L, -1, s->fn);                           /* mod fn */
    if (!lua_isfunction(L, -1)) {
        sl_errf(err, errlen, "step %s: module %s has no function %s", s->name,
                s->module, s->fn);
        goto done;
    }
    r->fn_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);       /* mod */
    if (sl_json_decode(L, s->params_json, strlen(s->params_json), jerr, sizeof(jerr))) {
        sl_errf(err, errlen, "step %s: params: %s", s->name, jerr);
        goto done;
    }
    r->params_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    ret = SL_OK;
done:
    lua_settop(L, top);
    return ret;
}

/* Resolves the rule functions a step of another kind names ("module.fn")
 * and its params. */
static int load_rule_fns(struct sl_rules *r, size_t i, char *err, size_t errlen) {
    lua_State *L = r->L;
    const struct sl_step_conf *s = &r->cf->steps[i];
    char jerr[256], module[256];
    int top = lua_gettop(L);
    for (int k = 0; k < SL_STEP_RULE_FNS; k++) {
        const char *name = s->rule_fn[k], *dot = name ? strrchr(name, '.') : NULL;
        if (!name) continue;
        if (!dot || dot == name || !dot[1] || (size_t)(dot - name) >= sizeof(module)) {
            sl_errf(err, errlen, "step %s: %s is not \"module.function\"", s->name, name);
            return SL_ERR;
        }
        snprintf(module, sizeof(module), "%.*s", (int)(dot - name), name);
        lua_getglobal(L, "require");                      /* require */
        lua_pushstring(L, module);                         /* require module */
        if (lua_pcall(L, 1, 1, 0)) {                       /* mod|err */
            load_error(err, errlen, s, module, lua_tostring(L, -1));
            lua_settop(L, top);
            return SL_ERR;
        }
        if (lua_istable(L, -1)) lua_getfield(L, -1, dot + 1);  /* mod fn */
        if (!lua_isfunction(L, -1)) {
            sl_errf(err, errlen, "step %s: module %s has no function %s", s->name, module, dot + 1);
            lua_settop(L, top);
            return SL_ERR;
        }
        r->rule_refs[i * SL_STEP_RULE_FNS + (size_t)k] = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_settop(L, top);
    }
    if (s->params_json) {
        if (sl_json_decode(L, s->params_json, strlen(s->params_json), jerr, sizeof(jerr))) {
            sl_errf(err, errlen, "step %s: params: %s", s->name, jerr);
            return SL_ERR;
        }
        r->params_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return SL_OK;
}

/* An error outside any pcall (as luaL_newstate's VMs report it): the
 * process cannot go on. */
static int panic(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", m ? m : "?");
    fflush(stderr);
    return 0;
}

struct sl_rules *sl_rules_create(const struct sl_config *cf, char *err, size_t errlen) {
    struct sl_rules *r = sl_calloc(1, sizeof(*r));
    r->cf = cf;
    r->refcount = 1;
    r->alloc = sl_lalloc_create();
    r->L = r->alloc ? lua_newstate(sl_lalloc_fn, r->alloc) : NULL;
    if (!r->L) {
        sl_errf(err, errlen, "cannot create a Lua state");
        sl_lalloc_destroy(r->alloc);
        free(r);
        return NULL;
    }
    lua_atpanic(r->L, panic);
    luaL_openlibs(r->L);
    /* A full collection when the heap reaches 4x what the last left (Lua's
     * default: 2x). Records leave only garbage and the state lives in C, so
     * the live heap is small and marking it often only costs CPU: the
     * collector took 11% of the record path's samples at 2x, 8.8% at 10x. */
    lua_gc(r->L, LUA_GCSETPAUSE, SL_RULES_GC_PAUSE);
    sl_json_init(r->L);
    sl_lazy_init(r->L);
    sl_lazy_open_env(r->L);   /* before any rule captures pairs, next, ... */
    /* The steps' path cache, made before any rule runs: it keeps the base
     * library's type for the getters (a rule may replace the global). */
    sl_step_push_path_cache(r->L);
    lua_pop(r->L, 1);
    rules_version(cf, r->version);
    open_sluice(r->L, r->version);
    set_path(r->L, cf);
    lua_pushcfunction(r->L, traceback);
    r->traceback_ref = luaL_ref(r->L, LUA_REGISTRYINDEX);
    lua_pushliteral(r->L, "kafka");
    r->kafka_ref = luaL_ref(r->L, LUA_REGISTRYINDEX);
    monitor_start();
    r->fn_refs = sl_malloc((cf->nsteps + 1) * sizeof(int));
    r->params_refs = sl_malloc((cf->nsteps + 1) * sizeof(int));
    r->rule_refs = sl_malloc((cf->nsteps + 1) * SL_STEP_RULE_FNS * sizeof(int));
    for (size_t i = 0; i < cf->nsteps; i++) r->fn_refs[i] = r->params_refs[i] = LUA_NOREF;
    for (size_t i = 0; i < cf->nsteps * SL_STEP_RULE_FNS; i++) r->rule_refs[i] = LUA_NOREF;
    for (size_t i = 0; i < cf->nsteps; i++) {
        if (cf->steps[i].type == SL_STEP_LUA ? load_step(r, i, err, errlen)
                                             : load_rule_fns(r, i, err, errlen)) {
            sl_rules_release(r);
            return NULL;
        }
    }
    return r;
}

void sl_rules_retain(struct sl_rules *r) { r->refcount++; }

void sl_rules_release(struct sl_rules *r) {
    if (!r || --r->refcount > 0) return;
    lua_close(r->L);
    sl_lalloc_destroy(r->alloc);
    free(r->fn_refs);
    free(r->params_refs);
    free(r->rule_refs);
    sl_config_destroy(r->owned_cf);
    free(r);
}

void sl_rules_own_config(struct sl_rules *r, struct sl_config *cf) {
    assert(cf == r->cf && !r->owned_cf);
    r->owned_cf = cf;
}

lua_State *sl_rules_state(struct sl_rules *r) { return r->L; }

const char *sl_rules_version(const struct sl_rules *r) { return r->version; }

/* ==================== Calling steps ==================== */

/* The step that runs now, shared with the monitor thread. The loop is
 * single-threaded: one step runs at a time. Strings are the caller's and live
 * while the step runs. */
static _Atomic(lua_State *) mon_L;          /* VM of the running step */
static _Atomic int64_t mon_started;         /* monotonic ms the step began, 0 idle */
static _Atomic int64_t mon_budget;          /* its budget, ms */
static _Atomic int mon_armed;               /* the monitor set the budget hook */
static _Atomic int mon_loading;             /* the VM is loading a module, not running a step */
static const char *_Atomic mon_what;        /* the record's name, or NULL: ... */
static const struct sl_input *_Atomic mon_in; /* ... named from it when needed */
static const char *_Atomic mon_step;        /* the step's name */

/* Set by the monitor thread once the step ran past its budget (lua_sethook
 * is safe to call from another thread or a signal, as lua.c does on SIGINT).
 * Raises the budget error in the step, unless the step it was meant for has
 * already ended. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
    int64_t started = mon_started;
    (void)ar;
    if (mon_loading) {
        /* Stays armed: a pcall in the module cannot swallow it for good. */
        if (started && sl_mono_ms() - started >= mon_budget)
            luaL_error(L, "module %s: loading ran past rules.watchdog (%d ms)", mon_what,
                       (int)mon_budget);
        return;
    }
    lua_sethook(L, NULL, 0, 0);
    if (started && sl_mono_ms() - started >= mon_budget)
        luaL_error(L, "step exceeded its budget of %d ms", (int)mon_budget);
}

/* Watches the load of step s's module: past limit_ms the budget hook stops
 * it (the JIT is off meanwhile, so nothing runs where the hook cannot). */
static void monitor_load(lua_State *L, const struct sl_step_conf *s, int64_t limit_ms) {
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    mon_what = s->module;
    mon_in = NULL;
    mon_step = s->name;
    mon_budget = limit_ms;
    mon_loading = 1;
    mon_L = L;
    mon_started = sl_mono_ms();
}

static void monitor_done(lua_State *L) {
    mon_started = 0;
    if (mon_armed) {
        lua_sethook(L, NULL, 0, 0);
        mon_armed = 0;
    }
    mon_loading = 0;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
}

static void sanitize_reason(const char *in, char *out, size_t n) {
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < n; i++) {
        char c = in[i];
        out[j++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.') ? c : '_';
    }
    out[j] = '\0';
    if (!j) snprintf(out, n, "filtered");
}

/* lua_pcall under the step's budget. No hook while the step runs within
 * its budget: a count hook slows the interpreter. The monitor thread arms
 * one when the budget passes. */
static int watched_pcall(struct sl_rules *r, size_t step, int nargs, int nresults, int handler,
                         const struct sl_input *in, const char *what) {
    lua_State *L = r->L;
    mon_what = what;
    mon_in = in;
    mon_step = r->cf->steps[step].name;
    mon_budget = r->cf->rules.budget_ms;
    mon_L = L;
    mon_started = sl_mono_coarse_ms();     /* per call: the budget is far above a tick */
    int rc = lua_pcall(L, nargs, nresults, handler);
    mon_started = 0;
    if (mon_armed) {
        lua_sethook(L, NULL, 0, 0);
        mon_armed = 0;
    }
    return rc;
}

void sl_rules_push_fn(struct sl_rules *r, size_t step, int slot) {
    lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->rule_refs[step * SL_STEP_RULE_FNS + (size_t)slot]);
    lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->params_refs[step]);
}

int sl_rules_pcall(struct sl_rules *r, size_t step, int nargs, int nresults,
                   const struct sl_input *in) {
    lua_State *L = r->L;
    int fn = lua_gettop(L) - nargs;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->traceback_ref);  /* fn args... tb */
    lua_insert(L, fn);                                     /* tb fn args... */
    int rc = watched_pcall(r, step, nargs, nresults, fn, in, NULL);
    lua_remove(L, fn);                                     /* results | error */
    return rc ? SL_ERR : SL_OK;
}

/* A context is a table carrying its record's kafka metadata table (the
 * core builds every context with input and kafka; a rule returns ctx or a
 * table built from it). A table without kafka is a rule's mistake, such as
 * returning ctx.product: an error naming the step, not a silent
 * missing_key at the next step. input may be dropped on purpose. */
static bool is_context(struct sl_rules *r, int idx) {
    lua_State *L = r->L;
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->kafka_ref);  /* "kafka", not hashed again */
    lua_gettable(L, idx);
    bool ok = lua_istable(L, -1);
    lua_pop(L, 1);
    return ok;
}

/* Appends a short rendering of the value at idx: a string quoted, a table
 * as JSON (or its keys when it cannot be encoded), cut at SL_RULES_SHOW. */
#define SL_RULES_SHOW 120 /* Bytes of a wrong return value shown in its error. */
static void show_value(lua_State *L, int idx, struct sl_buf *b) {
    struct sl_buf t = {0};
    char err[64];
    if (lua_type(L, idx) == LUA_TSTRING || lua_istable(L, idx)) {
        if (sl_json_encode_sorted(L, idx, &t, err, sizeof(err))) sl_buf_adds(&t, "(not encodable)");
    } else {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, idx);
        if (!lua_pcall(L, 1, 1, 0) && lua_isstring(L, -1)) sl_buf_adds(&t, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    if (t.len > SL_RULES_SHOW) sl_buf_printf(b, "%.*s...", SL_RULES_SHOW, t.data);
    else sl_buf_adds(b, sl_buf_cstr(&t));
    sl_buf_free(&t);
}

/* Writes the error of a wrong return value at idx: the step function's
 * file:line first (editors jump to it), the step, the value's type and a
 * short rendering; item > 0 names a list item. */
static void bad_return(struct sl_rules *r, size_t step, int idx, size_t item,
                       struct sl_buf *out) {
    lua_State *L = r->L;
    lua_Debug ar;
    const struct sl_step_conf *s = &r->cf->steps[step];
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_refs[step]);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
        sl_buf_printf(out, "%s:%d: ", ar.short_src, ar.linedefined);
    sl_buf_printf(out, "step %s (%s.%s) must return a context, nil and a reason, or a list of "
                  "contexts; it returned ", s->name, s->module, s->fn);
    if (item) sl_buf_printf(out, "a list whose item %zu is ", item);
    if (lua_istable(L, idx))
        sl_buf_adds(out, "a table that is not a context (it has no kafka table: return ctx, "
                    "or a table built from it): ");
    else sl_buf_printf(out, "a %s: ", luaL_typename(L, idx));
    show_value(L, idx, out);
}

const char *sl_rules_error_message(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    if (!m && lua_istable(L, -1)) {                       /* a failure object */
        lua_getfield(L, -1, "message");
        m = lua_tostring(L, -1);                          /* anchored by the table */
        lua_pop(L, 1);
    }
    return m;
}

enum sl_rules_result sl_rules_call(struct sl_rules *r, size_t step, int *ctx_ref,
                                   const struct sl_input *in, const char *what,
                                   struct sl_rules_out *out) {
    lua_State *L = r->L;
    int top = lua_gettop(L);
    enum sl_rules_result res = SL_RULES_ERROR;

    sl_buf_reset(&out->error);
    out->nrefs = 0;
    if (!lua_checkstack(L, 8)) {
        sl_buf_adds(&out->error, "Lua stack exhausted");
        return SL_RULES_ERROR;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->traceback_ref);  /* tb */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fn_refs[step]);  /* tb fn */
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ctx_ref);          /* tb fn ctx */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->params_refs[step]); /* tb fn ctx params */

    int rc = watched_pcall(r, step, 2, 2, top + 1, in, what); /* tb r1 r2 */
    if (rc) {
        const char *m = sl_rules_error_message(L);
        sl_buf_adds(&out->error, m ? m : "error object is not a string");
        goto done;
    }
    if (lua_istable(L, -2)) {
        lua_rawgeti(L, -2, 1);
        int many = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!many) {
            if (!is_context(r, -2)) {
                bad_return(r, step, lua_gettop(L) - 1, 0, &out->error);
                goto done;
            }
            lua_rawgeti(L, LUA_REGISTRYINDEX, *ctx_ref);
            if (!lua_rawequal(L, -1, -3)) {              /* not the ctx it was given */
                luaL_unref(L, LUA_REGISTRYINDEX, *ctx_ref);
                lua_pushvalue(L, -3);
                *ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            }
            res = SL_RULES_NEXT;
            goto done;
        }
        size_t n = lua_objlen(L, -2);
        out->refs = sl_realloc(out->refs, (n + 1) * sizeof(int));
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, -2, (int)i);
            if (!lua_istable(L, -1) || !is_context(r, -1)) {
                bad_return(r, step, lua_gettop(L), i, &out->error);
                lua_pop(L, 1);
                for (size_t j = 0; j < out->nrefs; j++) luaL_unref(L, LUA_REGISTRYINDEX, out->refs[j]);
                out->nrefs = 0;
                goto done;
            }
            out->refs[out->nrefs++] = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        res = SL_RULES_MANY;
    } else if (lua_isnil(L, -2)) {
        const char *reason = lua_tostring(L, -1);
        sanitize_reason(reason ? reason : "filtered", out->reason, sizeof(out->reason));
        res = SL_RULES_FILTERED;
    } else {
        bad_return(r, step, lua_gettop(L) - 1, 0, &out->error);
    }
done:
    lua_settop(L, top);
    return res;
}

void sl_rules_jit(struct sl_rules *r, bool on) {
    if (r->interpreted != on) return;
    r->interpreted = !on;
    luaJIT_setmode(r->L, 0, LUAJIT_MODE_ENGINE | (on ? LUAJIT_MODE_ON : LUAJIT_MODE_OFF));
    /* Compiled traces would still run, where hooks do not fire. */
    if (!on) luaJIT_setmode(r->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
}

void sl_rules_out_free(struct sl_rules_out *out) {
    sl_buf_free(&out->error);
    free(out->refs);
    out->refs = NULL;
    out->nrefs = 0;
}

/* ==================== Watchdog ==================== */

static char wd_file[4096];                  /* where the watchdog leaves the record */
static _Atomic int64_t wd_limit;            /* 0: watchdog off (check, test) */
static pthread_once_t mon_once = PTHREAD_ONCE_INIT;

static void poison_path(const struct sl_config *cf, char *out, size_t n) {
    snprintf(out, n, "%s/poisoned-%s", cf->rules.state_dir, cf->kafka.group);
}

/* Watches the running step: past its budget it arms the budget hook; past
 * the watchdog limit (a compiled loop ignores hooks) it records the record,
 * logs and exits so that a supervisor restarts the process. */
static void *monitor(void *arg) {
    (void)arg;
    for (;;) {
        usleep(SL_RULES_MONITOR_MS * 1000);
        int64_t started = mon_started;
        if (!started) continue;
        int64_t ran = sl_mono_ms() - started;
        if (ran >= mon_budget && !mon_armed) {
            mon_armed = 1;
            lua_sethook(mon_L, budget_hook, LUA_MASKCOUNT, SL_RULES_HOOK_COUNT);
        }
        if (mon_loading) {
            /* Only a C function can keep the hook from stopping a load, and
             * nothing can stop that but the end of the process. */
            if (ran < 2 * mon_budget + SL_RULES_LOAD_GRACE_MS || mon_started != started) continue;
            sl_log(SL_LOG_ERROR, "rules", "watchdog: loading module %s (step %s) has run %lld "
                   "ms inside a C function and cannot be stopped; exiting", mon_what, mon_step,
                   (long long)ran);
            _exit(SL_RULES_WATCHDOG_EXIT);
        }
        if (!wd_limit || ran < wd_limit || mon_started != started) continue;
        /* The record is named here, not before every step; if the step
         * ended meanwhile, its record may be gone: look again after. */
        char name[256];
        const char *what = mon_what;
        const struct sl_input *in = mon_in;
        if (what) snprintf(name, sizeof(name), "%s", what);
        else if (in) sl_step_input_name(in, name, sizeof(name));
        else snprintf(name, sizeof(name), "-");
        if (mon_started != started) continue;
        FILE *f = fopen(wd_file, "a");    /* one line per stopped record */
        if (f) {
            fprintf(f, "%s\t%s\n", name, mon_step);
            fclose(f);
        }
        sl_log(SL_LOG_ERROR, "rules",
               "watchdog: step %s has run %lld ms on record %s; exiting so a "
               "supervisor restarts sluice; the record will be dead-lettered (%s)",
               mon_step, (long long)ran, name, wd_file);
        _exit(SL_RULES_WATCHDOG_EXIT);
    }
    return NULL;
}

static void monitor_thread(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, monitor, NULL) == 0) pthread_detach(t);
    else sl_log(SL_LOG_ERROR, "rules", "cannot start the monitor thread: budgets are off");
}

static void monitor_start(void) { pthread_once(&mon_once, monitor_thread); }

int sl_rules_watchdog_start(const struct sl_config *cf, char *err, size_t errlen) {
    if (mkdir(cf->rules.state_dir, 0755) && errno != EEXIST) {
        sl_errf(err, errlen, "rules.state_dir %s: %s", cf->rules.state_dir, strerror(errno));
        return SL_ERR;
    }
    poison_path(cf, wd_file, sizeof(wd_file));
    wd_limit = cf->rules.watchdog_ms;
    monitor_start();
    return SL_OK;
}

struct sl_rules_poison *sl_rules_poison_load(const struct sl_config *cf, size_t *n) {
    char path[4096], line[512];
    struct sl_rules_poison *list = NULL;
    size_t cap = 0;
    *n = 0;
    poison_path(cf, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *step = strchr(line, '\t'), *state;
        if (!step) continue;
        *step++ = '\0';
        state = strchr(step, '\t');
        if (state) *state++ = '\0';
        struct sl_rules_poison *e = NULL;
        for (size_t i = 0; i < *n && !e; i++)
            if (!strcmp(list[i].what, line)) e = &list[i];   /* the later line wins */
        if (!e) {
            if (*n == cap) list = sl_realloc(list, (cap = cap * 2 + 8) * sizeof(*list));
            e = &list[(*n)++];
        }
        snprintf(e->what, sizeof(e->what), "%s", line);
        snprintf(e->step, sizeof(e->step), "%s", step);
        e->dead_lettered = state && !strcmp(state, "dead-lettered");
    }
    fclose(f);
    return list;
}

int sl_rules_poison_save(const struct sl_config *cf, const struct sl_rules_poison *list,
                         size_t n) {
    char path[4096], tmp[4200];
    size_t from = n > SL_RULES_POISON_MAX ? n - SL_RULES_POISON_MAX : 0;
    poison_path(cf, path, sizeof(path));
    if (!n) return unlink(path) && errno != ENOENT ? SL_ERR : SL_OK;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return SL_ERR;
    for (size_t i = from; i < n; i++)
        fprintf(f, "%s\t%s%s\n", list[i].what, list[i].step,
                list[i].dead_lettered ? "\tdead-lettered" : "");
    if (fclose(f) || rename(tmp, path)) {
        unlink(tmp);
        return SL_ERR;
    }
    return SL_OK;
}
