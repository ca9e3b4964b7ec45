/* config_test.c -- config loading: defaults, every error names the file and
 * the key path, durations and sizes. */
#define _GNU_SOURCE
#include "config.h"
#include "sl.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

/* Writes text to a temporary config file and loads it. */
static struct sl_config *load(const char *text, char *err, size_t errlen) {
    strcpy(path, "/tmp/sluice-config-test-XXXXXX.lua");
    int fd = mkstemps(path, 4);
    if (fd < 0) return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) { close(fd); return NULL; }
    close(fd);
    err[0] = '\0';
    struct sl_config *c = sl_config_load(path, err, errlen);
    unlink(path);
    return c;
}

/* Loads text expecting an error that contains want (and the file name). */
static int fails_with(const char *text, const char *want) {
    char err[512];
    struct sl_config *c = load(text, err, sizeof(err));
    int ok = !c && strstr(err, want) && strstr(err, "/tmp/sluice-config-test-");
    if (!ok) printf("#   got: %s\n", c ? "(loaded)" : err);
    sl_config_destroy(c);
    return ok;
}

/* What a reload from text a to text b must restart for: "" when nothing. */
static const char *restart_key(const char *a, const char *b) {
    static char key[256];
    char err[512];
    struct sl_config *ca = load(a, err, sizeof(err)), *cb = load(b, err, sizeof(err));
    key[0] = '\0';
    if (!ca || !cb) snprintf(key, sizeof(key), "(not loaded: %s)", err);
    else if (!sl_config_needs_restart(ca, cb, key, sizeof(key))) key[0] = '\0';
    sl_config_destroy(ca);
    sl_config_destroy(cb);
    return key;
}

static void reloads(void) {
    static const struct { const char *name, *a, *b, *want; } cases[] = {
        {"nothing changed", "return { pipeline = { { lua = 'm.a', params = { x = 1 } } } }",
         "return { pipeline = { { lua = 'm.a', params = { x = 1 } } } }", ""},
        {"a lua step's params may change",
         "return { pipeline = { { lua = 'm.a', params = { x = 1, t = { 'a' } } } } }",
         "return { pipeline = { { lua = 'm.a', params = { x = 2, t = { 'a', 'b' }, y = true } } } }", ""},
        {"params may appear", "return { pipeline = { { lua = 'm.a' } } }",
         "return { pipeline = { { lua = 'm.a', params = { x = 1 } } } }", ""},
        {"rules.budget and the canary's file and slack may change",
         "return { rules = { budget = '100ms' }, pipeline = { { lua = 'm.a' } } }",
         "return { rules = { budget = '150ms', canary = 'c.jsonl', canary_filter_slack = 9, "
         "canary_filter_slack_pct = 20 }, pipeline = { { lua = 'm.a' } } }", ""},
        {"kafka.brokers needs a restart",
         "return { kafka = { brokers = 'embedded' }, pipeline = { { lua = 'm.a' } } }",
         "return { kafka = { brokers = 'k:9092' }, pipeline = { { lua = 'm.a' } } }",
         "kafka.brokers changed"},
        {"an input topic added needs a restart",
         "return { kafka = { input = { 'a' } }, pipeline = { { lua = 'm.a' } } }",
         "return { kafka = { input = { 'a', 'b' } }, pipeline = { { lua = 'm.a' } } }",
         "kafka.input[2] added"},
        {"the admin listener needs a restart", "return { admin = '127.0.0.1:1', pipeline = { { lua = 'm.a' } } }",
         "return { admin = '127.0.0.1:2', pipeline = { { lua = 'm.a' } } }", "admin changed"},
        {"a collector removed needs a restart",
         "return { collector = { listen = '127.0.0.1:1' }, pipeline = { { lua = 'm.a' } } }",
         "return { pipeline = { { lua = 'm.a' } } }", "collector removed"},
        {"a step's module needs a restart", "return { pipeline = { { lua = 'm.a' } } }",
         "return { pipeline = { { lua = 'm.b', name = 'a' } } }", "pipeline[1].lua changed"},
        {"a window's length needs a restart",
         "return { pipeline = { { name = 'w', window = { key = 'k', length = '1m', as = 'a', "
         "aggregate = { n = { 'count', 'k' } } } } } }",
         "return { pipeline = { { name = 'w', window = { key = 'k', length = '2m', as = 'a', "
         "aggregate = { n = { 'count', 'k' } } } } } }", "pipeline[1].window.length changed"},
        {"a key that only looks like params needs a restart",
         "return { pipeline = { { lua = 'm.a' } }, rules = { state_dir = 'x' } }",
         "return { pipeline = { { lua = 'm.a' } }, rules = { state_dir = 'y' } }",
         "rules.state_dir changed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = restart_key(cases[i].a, cases[i].b);
        if (strcmp(got, cases[i].want)) printf("#   got \"%s\"\n", got);
        TEST(cases[i].name, !strcmp(got, cases[i].want));
    }
}

static void durations(void) {
    static const struct { const char *s; int64_t ms; } good[] = {
        {"250ms", 250}, {"5s", 5000}, {"5m", 300000}, {"1h", 3600000},
        {"2d", 172800000}, {"1m30s", 90000}, {"0s", 0}};
    static const char *bad[] = {"", "5", "m", "-5m", "5x", "5 m", "1.5m", "ms5"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ms = -1;
        char name[64];
        snprintf(name, sizeof(name), "duration \"%s\" is %lld ms", good[i].s, (long long)good[i].ms);
        TEST(name, sl_config_parse_duration(good[i].s, &ms) == SL_OK && ms == good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms;
        char name[64];
        snprintf(name, sizeof(name), "duration \"%s\" is refused", bad[i]);
        TEST(name, sl_config_parse_duration(bad[i], &ms) == SL_ERR);
    }
    size_t b = 0;
    TEST("size 64KB", sl_config_parse_size("64KB", &b) == SL_OK && b == 64000);
    TEST("size 5MiB", sl_config_parse_size("5MiB", &b) == SL_OK && b == 5u << 20);
    TEST("size 1024", sl_config_parse_size("1024", &b) == SL_OK && b == 1024);
    TEST("size 5 lightyears refused", sl_config_parse_size("5ly", &b) == SL_ERR);
}

static void origins(void) {
    static const struct { const char *in, *want; } good[] = {
        {"http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
        {"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
        {"HTTPS://Shop.Example", "https://shop.example"},
        {"https://shop.example:443/", "https://shop.example"},
        {"http://shop.example:80", "http://shop.example"},
        {"http://shop.example:443", "http://shop.example:443"},
        {"http://[::1]:9090", "http://[::1]:9090"},
        {"*", "*"},
    };
    static const char *bad[] = {
        "shop.example", "ftp://shop.example", "http://", "http://shop.example/products",
        "http://shop.example//", "http://shop.example?x=1", "http://user@shop.example",
        "http://shop.example:0", "http://shop.example:99999", "http://shop.example:",
        "http://shop example", "http://[::1", "https://shop.example#x", " http://a",
    };
    char out[128], name[160];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(name, sizeof(name), "origin %s normalises to %s", good[i].in, good[i].want);
        TEST(name, sl_config_normalize_origin(good[i].in, out, sizeof(out)) == SL_OK &&
                   !strcmp(out, good[i].want));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(name, sizeof(name), "\"%s\" is no origin", bad[i]);
        TEST(name, sl_config_normalize_origin(bad[i], out, sizeof(out)) == SL_ERR);
    }
    TEST("an entry that is no origin names its key path and value",
         fails_with("return { collector = { allowed_origins = { 'http://a:1', 'http://shop/x' } } }",
                    "collector.allowed_origins[2]: expected an origin like"));
    TEST("the bad value is quoted in the message",
         fails_with("return { collector = { allowed_origins = 'shop.example' } }",
                    "collector.allowed_origins: expected an origin like \"https://shop.example\""
                    " or \"http://127.0.0.1:8080\" (scheme://host[:port], no path), got \"shop.example\""));
    char err[512];
    struct sl_config *c = load("return { collector = { allowed_origins = { 'HTTP://127.0.0.1:8080/' } } }",
                               err, sizeof(err));
    TEST("a loaded origin with a trailing slash is stored normalised",
         c && c->collector.norigins == 1 &&
         !strcmp(c->collector.allowed_origins[0], "http://127.0.0.1:8080"));
    sl_config_destroy(c);
}

int main(void) {
    char err[512];
    durations();
    origins();

    setenv("SLUICE_CONFIG_TEST_TOPIC", "from-env", 1);
    struct sl_config *c = load(
        "return { kafka = { input = env('SLUICE_CONFIG_TEST_TOPIC', 'x'),"
        "  properties = { ['fetch.wait.max.ms'] = 50, ['check.crcs'] = true },"
        "  consumer = { ['session.timeout.ms'] = '6000' }, producer = { ['linger.ms'] = 5 } },"
        "  pipeline = {"
        "    { lua = 'recommendations.extract', params = { app_id = 'a', n = 1795667677389 } },"
        "    { window = { key = 'userId', length = '5m', dedupe = 'eventId',"
        "        aggregate = { slugs = { 'list', 'product.slug' } } } },"
        "    { kafka = { topic = 'out', key = 'userId', fields = { 'userId' } } } } }",
        err, sizeof(err));
    TEST("a good config loads", c != NULL);
    if (c) {
        TEST("brokers default to embedded", c->kafka.embedded && !strcmp(c->kafka.brokers, "embedded"));
        TEST("env() reads the environment", !strcmp(c->kafka.input[0], "from-env"));
        TEST("dead-letter topic default", !strcmp(c->kafka.dead_letter, "sluice.dead-letter"));
        TEST("three steps", c->nsteps == 3);
        TEST("lua step name defaults to the module's last part",
             !strcmp(c->steps[0].name, "extract") && !strcmp(c->steps[0].fn, "extract"));
        TEST("params travel as faithful JSON",
             strstr(c->steps[0].params_json, "1795667677389") != NULL);
        TEST("window length parsed", c->steps[1].type == SL_STEP_WINDOW &&
                                     c->steps[1].length_ms == 300000);
        TEST("window time defaults to the Kafka timestamp", c->steps[1].time_var == NULL);
        TEST("window max_skew defaults to 2 minutes", c->steps[1].max_skew_ms == 120000);
        TEST("window aggregation parsed", c->steps[1].naggs == 1 &&
             c->steps[1].aggs[0].kind == SL_AGG_LIST && !strcmp(c->steps[1].aggs[0].var, "product.slug"));
        TEST("kafka step parsed", c->steps[2].type == SL_STEP_KAFKA && c->steps[2].nfields == 1);
        TEST("kafka properties: numbers and booleans become strings", c->kafka.nprops == 2);
        size_t n;
        struct sl_kafka_prop *p = sl_config_kafka_props(c, true, &n);
        TEST("consumer properties: the shared ones then kafka.consumer's",
             n == 3 && !strcmp(p[2].name, "session.timeout.ms") && !strcmp(p[2].value, "6000"));
        free(p);
        p = sl_config_kafka_props(c, false, &n);
        TEST("producer properties: the shared ones then kafka.producer's",
             n == 3 && !strcmp(p[2].name, "linger.ms"));
        free(p);
        TEST("step lookup by name", sl_config_step_index(c, "extract") == 0 &&
                                    sl_config_step_index(c, "nope") == -1);
        TEST("rules budget default 200 ms, watchdog 10x", c->rules.budget_ms == 200 &&
                                                          c->rules.watchdog_ms == 2000);
    }
    sl_config_destroy(c);
    sl_config_destroy(NULL);

    TEST("window length as a number names the key path",
         fails_with("return { pipeline = { { lua = 'a.b' }, { window = { key = 'k', length = 5,"
                    " aggregate = {} } } } }",
                    "pipeline[2].window.length: expected a duration like \"5m\", got 5"));
    TEST("a window max_skew of 0 names the key path",
         fails_with("return { pipeline = { { lua = 'a.b' }, { window = { key = 'k', length = '5m',"
                    " max_skew = '0s', aggregate = {} } } } }",
                    "pipeline[2].window.max_skew: expected a duration above 0"));
    TEST("unknown top-level key", fails_with("return { pipline = {} }", "pipline: unknown key"));
    TEST("unknown key in a section", fails_with("return { rules = { budgett = '1s' }, pipeline = { { lua = 'a' } } }",
                                                "rules.budgett: unknown key"));
    TEST("a step with two kinds", fails_with("return { pipeline = { { lua = 'a', kafka = { topic = 't' } } } }",
                                             "pipeline[1]: expected exactly one of"));
    TEST("a kafka step without a topic", fails_with("return { pipeline = { { kafka = {} } } }",
                                                    "pipeline[1].kafka.topic: expected a string"));
    TEST("a bad aggregation", fails_with("return { pipeline = { { window = { key = 'k', length = '1m',"
                                         " aggregate = { x = { 'sum', 'v' } } } } } }",
                                         "pipeline[1].window.aggregate.x"));
    TEST("duplicate step names", fails_with("return { pipeline = { { lua = 'a.x' }, { lua = 'b.x' } } }",
                                            "pipeline[2].name: expected a step name not used before"));
    TEST("a syntax error gives file:line", fails_with("return {\n pipeline = { { lua = } }\n}", ":2:"));
    TEST("a config returning no table", fails_with("return 5", "expected the file to return a table"));
    TEST("collector.ip must be hash, keep or drop",
         fails_with("return { collector = { ip = 'maybe' } }", "collector.ip: expected \"hash\""));
    TEST("rules.watchdog shorter than the budget",
         fails_with("return { rules = { budget = '1s', watchdog = '500ms' }, pipeline = { { lua = 'a' } } }",
                    "rules.watchdog"));
    TEST("neither pipeline nor collector", fails_with("return {}", "needs a pipeline, a collector or both"));
    TEST("a missing file", fails_with("return nil --", "expected the file to return a table"));
    TEST("kafka.consumer must be a table of properties",
         fails_with("return { kafka = { consumer = 5 }, pipeline = { { lua = 'a' } } }",
                    "kafka.consumer: expected a table of librdkafka properties"));
    /* No properties at all: empty arrays, not NULL copies. */
    c = load("return { pipeline = { { lua = 'a' } } }", err, sizeof(err));
    size_t n = 9;
    struct sl_kafka_prop *none = c ? sl_config_kafka_props(c, true, &n) : NULL;
    TEST("no properties: an empty list", none && n == 0);
    free(none);
    sl_config_destroy(c);
    c = sl_config_load("/nonexistent/sluice.lua", err, sizeof(err));
    TEST("a file that does not exist names it", !c && strstr(err, "/nonexistent/sluice.lua"));
    c = load("return { pipeline = { { lua = 'a' } } }", err, sizeof(err));
    TEST("canary defaults: no file, last 200 records, 8 MiB, slack 5 or 10%",
         c && !c->rules.canary && c->rules.canary_last == 200 && c->rules.canary_bytes == 8u << 20
         && c->rules.canary_slack == 5 && c->rules.canary_slack_pct == 10);
    sl_config_destroy(c);
    TEST("rules.canary_last must be a count",
         fails_with("return { rules = { canary_last = -1 }, pipeline = { { lua = 'a' } } }",
                    "rules.canary_last: expected an integer >= 0"));
    reloads();
    return TEST_DONE();
}
