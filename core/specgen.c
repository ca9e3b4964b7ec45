/* specgen.c -- a `sluice test` trace as a busted spec (see specgen.h). */
#define _GNU_SOURCE
#include "specgen.h"
#include "json.h"
#include "sl.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

/* The spec's head: helpers the cases use. */
static const char head[] =
"local T = require \"sluice.testing\"\n"
"local sluice = require \"sluice\"\n"
"\n"
"local json = sluice.json_decode\n"
"\n"
"-- The context as the trace shows it: without input, kafka without timestamp.\n"
"local function traced(ctx)\n"
"  local t = {}\n"
"  for k, v in pairs(ctx) do t[k] = v end\n"
"  t.input = nil\n"
"  if type(ctx.kafka) == \"table\" then\n"
"    t.kafka = {}\n"
"    for k, v in pairs(ctx.kafka) do t.kafka[k] = v end\n"
"    t.kafka.timestamp = nil\n"
"  end\n"
"  return t\n"
"end\n"
"\n"
"-- The context a step starts on: ctx (JSON, as traced) with the record's\n"
"-- input decoded as the core decodes it.\n"
"local function with_input(ctx, input)\n"
"  local c = json(ctx)\n"
"  c.input = T.ctx(input).input\n"
"  if type(c.kafka) == \"table\" then c.kafka.timestamp = sluice.now() end\n"
"  return c\n"
"end\n\n";

/* A context seen in the trace: the last one of a record's part ("3", "3.2"). */
struct seen {
    char part[48];
    char *json;
};

struct gen {
    FILE *out;
    const struct sl_config *cf;
    lua_State *J;
    struct seen *seen;
    size_t nseen, capseen;
    long record;                 /* the record whose describe is open, 0: none */
    char many_part[48];          /* an open list case: the part split */
    char many_step[128];         /*   ...by this step */
    size_t many_n;
    char *const *lines;
    const long long *linenos;
    size_t nlines;
};

/* ==================== Text ==================== */

/* Writes s as a Lua long string: of the lowest level whose closing bracket
 * first occurs where it closes s (not inside s, nor across its end). */
static void long_string(FILE *out, const char *s) {
    static const char eqs[] = "================";
    size_t n = strlen(s);
    int level = 0;
    for (; level < (int)sizeof(eqs) - 1; level++) {
        char close[24];
        snprintf(close, sizeof(close), "]%.*s]", level, eqs);
        char *t = sl_malloc(n + sizeof(close));
        memcpy(t, s, n);
        strcpy(t + n, close);
        bool closes_at_end = strstr(t, close) == t + n;
        free(t);
        if (closes_at_end) break;
    }
    fprintf(out, "[%.*s[%s%s]%.*s]", level, eqs, s[0] == '\n' ? "\n" : "", s, level, eqs);
}

/* Writes s as a quoted Lua string. */
static void quoted(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(out, "\\%c", *s);
        else if (*s == '\n') fputs("\\n", out);
        else if ((unsigned char)*s < 32) fprintf(out, "\\%03d", (unsigned char)*s);
        else fputc(*s, out);
    }
    fputc('"', out);
}

/* ==================== Contexts seen ==================== */

static struct seen *seen_find(struct gen *g, const char *part) {
    for (size_t i = g->nseen; i-- > 0;)
        if (!strcmp(g->seen[i].part, part)) return &g->seen[i];
    return NULL;
}

static void seen_set(struct gen *g, const char *part, const char *json) {
    struct seen *s = seen_find(g, part);
    if (!s) {
        if (g->nseen == g->capseen)
            g->seen = sl_realloc(g->seen, (g->capseen = g->capseen * 2 + 16) * sizeof(*g->seen));
        s = &g->seen[g->nseen++];
        snprintf(s->part, sizeof(s->part), "%s", part);
        s->json = NULL;
    }
    free(s->json);
    s->json = sl_strdup(json);
}

/* The context part started the step on: its own last one, or (a context
 * split from a list) its parent's; NULL for the record's value. */
static const char *input_of(struct gen *g, const char *part) {
    char p[48];
    snprintf(p, sizeof(p), "%s", part);
    for (;;) {
        struct seen *s = seen_find(g, p);
        if (s) return s->json;
        char *dot = strrchr(p, '.');
        if (!dot) return NULL;
        *dot = '\0';
    }
}

/* ==================== Cases ==================== */

static void close_many(struct gen *g) {
    if (!g->many_n) return;
    fprintf(g->out, "      }, got)\n    end)\n");
    g->many_n = 0;
}

static void close_record(struct gen *g) {
    close_many(g);
    if (g->record) fprintf(g->out, "  end)\n\n");
    g->record = 0;
}

static void open_record(struct gen *g, long record) {
    if (record == g->record) return;
    close_record(g);
    g->record = record;
    fprintf(g->out, "  describe(\"record %ld", record);
    if (record >= 1 && (size_t)record <= g->nlines)
        fprintf(g->out, " (line %lld)", g->linenos[record - 1]);
    fprintf(g->out, "\", function()\n    local input = ");
    long_string(g->out, record >= 1 && (size_t)record <= g->nlines ? g->lines[record - 1] : "");
    fprintf(g->out, "\n    local kafka = { topic = ");
    quoted(g->out, g->cf->kafka.input[0]);
    fprintf(g->out, ", partition = 0, offset = %lld }\n\n",
            record >= 1 && (size_t)record <= g->nlines ? g->linenos[record - 1] - 1 : 0);
}

/* Opens an it(): runs step s on the context part started it on. */
static void open_case(struct gen *g, const struct sl_step_conf *s, const char *part,
                      const char *what) {
    const char *in = input_of(g, part);
    char title[256];
    if (strchr(part, '.')) snprintf(title, sizeof(title), "%s: %s (context %s)", s->name, what, part);
    else snprintf(title, sizeof(title), "%s: %s", s->name, what);
    fprintf(g->out, "    it(");
    quoted(g->out, title);
    fprintf(g->out, ", function()\n      local out = T.run_step(steps[");
    quoted(g->out, s->name);
    fprintf(g->out, "].fn, ");
    if (in) {
        fputs("with_input(", g->out);
        long_string(g->out, in);
        fputs(", input)", g->out);
    } else {
        fputs("input", g->out);
    }
    fprintf(g->out, ", steps[");
    quoted(g->out, s->name);
    fprintf(g->out, "].params,\n        { %skafka = kafka, step = ", in ? "ctx = true, " : "");
    quoted(g->out, s->name);
    fprintf(g->out, ", fn_name = steps[");
    quoted(g->out, s->name);
    fprintf(g->out, "].fn_name })\n");
}

/* The error's message without its leading "file:line: " (the file's path
 * is the rules folder's, which a spec may name otherwise). */
static const char *message_of(const char *e) {
    const char *c = strchr(e, ':');
    if (!c || c == e) return e;
    const char *d = c + 1;
    while (*d >= '0' && *d <= '9') d++;
    if (d == c + 1 || d[0] != ':' || d[1] != ' ') return e;
    return d + 2;
}

/* One trace line of a lua step (decoded, at the top of J). */
static void lua_line(struct gen *g, const struct sl_step_conf *s, const char *part) {
    lua_State *J = g->J;
    struct sl_buf b = {0};
    char err[128];
    int t = lua_gettop(J);
    lua_getfield(J, t, "ctx");
    lua_getfield(J, t, "filtered");
    lua_getfield(J, t, "error");                      /* ctx filtered error */
    const char *dot = strrchr(part, '.');
    char parent[48];
    snprintf(parent, sizeof(parent), "%.*s", dot ? (int)(dot - part) : (int)strlen(part), part);
    if (lua_isstring(J, -1)) {                        /* a dead letter */
        close_many(g);
        open_case(g, s, part, "error");
        fprintf(g->out, "      assert.are.equal(\"error\", out.status)\n"
                        "      assert.is_truthy(out.error:find(");
        quoted(g->out, message_of(lua_tostring(J, -1)));
        fprintf(g->out, ", 1, true), out.error)\n    end)\n");
    } else if (lua_isstring(J, -2)) {                 /* filtered */
        close_many(g);
        open_case(g, s, part, "filtered");
        fprintf(g->out, "      assert.are.equal(\"filtered\", out.status, out.error)\n"
                        "      assert.are.equal(");
        quoted(g->out, lua_tostring(J, -2));
        fprintf(g->out, ", out.reason)\n    end)\n");
    } else if (lua_istable(J, -3) && !sl_json_encode_sorted(J, t + 1, &b, err, sizeof(err))) {
        if (dot && !seen_find(g, part)) {             /* a context of a list */
            if (!g->many_n || strcmp(g->many_part, parent) || strcmp(g->many_step, s->name)) {
                close_many(g);
                open_case(g, s, parent, "list");
                fprintf(g->out, "      assert.are.equal(\"many\", out.status, out.error)\n"
                                "      local got = {}\n"
                                "      for i, c in ipairs(out.contexts) do got[i] = traced(c) end\n"
                                "      assert.are.same({\n");
                snprintf(g->many_part, sizeof(g->many_part), "%s", parent);
                snprintf(g->many_step, sizeof(g->many_step), "%s", s->name);
            }
            fputs("        json(", g->out);
            long_string(g->out, sl_buf_cstr(&b));
            fputs("),\n", g->out);
            g->many_n++;
        } else {
            close_many(g);
            open_case(g, s, part, "next");
            fprintf(g->out, "      assert.are.equal(\"next\", out.status, out.error)\n"
                            "      assert.are.same(json(");
            long_string(g->out, sl_buf_cstr(&b));
            fprintf(g->out, "), traced(out.ctx))\n    end)\n");
        }
        seen_set(g, part, sl_buf_cstr(&b));
    }
    sl_buf_free(&b);
    lua_settop(J, t);
}

/* One trace line (decoded, at the top of J). */
static void line(struct gen *g) {
    lua_State *J = g->J;
    int t = lua_gettop(J);
    char part[48];
    long record;
    lua_getfield(J, t, "record");
    if (lua_type(J, -1) == LUA_TNUMBER) {
        record = (long)lua_tonumber(J, -1);
        snprintf(part, sizeof(part), "%ld", record);
    } else if (lua_type(J, -1) == LUA_TSTRING) {
        snprintf(part, sizeof(part), "%s", lua_tostring(J, -1));
        record = strtol(part, NULL, 10);
    } else {
        lua_settop(J, t);
        return;
    }
    lua_getfield(J, t, "step");
    int step = lua_isstring(J, -1) ? sl_config_step_index(g->cf, lua_tostring(J, -1)) : -1;
    lua_settop(J, t);
    if (step < 0) return;                              /* not_json, ... */
    open_record(g, record);
    if (g->cf->steps[step].type == SL_STEP_LUA) {
        lua_line(g, &g->cf->steps[step], part);
        return;
    }
    /* Another kind's context: the next lua step starts on it. */
    lua_getfield(J, t, "ctx");
    struct sl_buf b = {0};
    char err[128];
    if (lua_istable(J, -1) && !sl_json_encode_sorted(J, lua_gettop(J), &b, err, sizeof(err)))
        seen_set(g, part, sl_buf_cstr(&b));
    sl_buf_free(&b);
    lua_settop(J, t);
}

/* The steps table: each lua step's function and params. */
static void steps_table(struct gen *g) {
    fputs("local steps = {\n", g->out);
    for (size_t i = 0; i < g->cf->nsteps; i++) {
        const struct sl_step_conf *s = &g->cf->steps[i];
        char fn_name[512];
        if (s->type != SL_STEP_LUA) continue;
        fputs("  [", g->out);
        quoted(g->out, s->name);
        fputs("] = { fn = require(", g->out);
        quoted(g->out, s->module);
        fputs(")[", g->out);
        quoted(g->out, s->fn);
        snprintf(fn_name, sizeof(fn_name), "%s.%s", s->module, s->fn);
        fputs("], fn_name = ", g->out);
        quoted(g->out, fn_name);
        /* Keys sorted: the config's table has no order of its own. */
        struct sl_buf b = {0};
        char err[128];
        if (sl_json_decode(g->J, s->params_json, strlen(s->params_json), err, sizeof(err)) ||
            sl_json_encode_sorted(g->J, lua_gettop(g->J), &b, err, sizeof(err)))
            sl_buf_adds(&b, s->params_json);
        lua_settop(g->J, 0);
        fputs(",\n    params = json(", g->out);
        long_string(g->out, sl_buf_cstr(&b));
        fputs(") },\n", g->out);
        sl_buf_free(&b);
    }
    fputs("}\n\n", g->out);
}

int sl_specgen_write(FILE *out, const char *trace, size_t len, const struct sl_config *cf,
                     const char *input_name, char *const *lines, const long long *linenos,
                     size_t nlines, char *err, size_t errlen) {
    int ret = SL_ERR;
    struct gen g = {.out = out, .cf = cf, .lines = lines, .linenos = linenos, .nlines = nlines};
    g.J = luaL_newstate();
    if (!g.J) {
        sl_errf(err, errlen, "cannot create a Lua state");
        return SL_ERR;
    }
    sl_json_init(g.J);
    fprintf(out, "-- Generated by `sluice test --emit-spec` from %s with %s: for each\n"
                 "-- record, each lua step it reached, run with sluice.testing on the\n"
                 "-- context it started on, and what the step gave back then. Edit the\n"
                 "-- expectations into the behaviour you want; run with busted.\n\n",
            input_name, cf->file);
    fputs(head, out);
    steps_table(&g);
    fputs("describe(", out);
    char title[512];
    snprintf(title, sizeof(title), "%s through %s", input_name, cf->file);
    quoted(out, title);
    fputs(", function()\n", out);
    for (const char *p = trace, *end = trace + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char jerr[128];
        if (n && !sl_json_decode(g.J, p, n, jerr, sizeof(jerr))) {
            if (lua_istable(g.J, -1)) line(&g);
            lua_settop(g.J, 0);
        } else if (n) {
            sl_errf(err, errlen, "the trace has a line that is not JSON: %s", jerr);
            goto done;
        }
        p += n + 1;
    }
    close_record(&g);
    fputs("end)\n", out);
    ret = SL_OK;
done:
    for (size_t i = 0; i < g.nseen; i++) free(g.seen[i].json);
    free(g.seen);
    lua_close(g.J);
    return ret;
}
