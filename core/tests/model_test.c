/* model_test.c -- the built-in model: Python's random stream, the seed's
 * generator, training, scoring, the model file, online learning, the
 * evaluation protocol and the scoring server's answers.
 *
 * Golden values of the generator and of mt.c come from CPython 3.11
 * (random.seed(N), and the generator of examples/seed/README.md run in
 * Python with now = 1730000000); everything else is derived here from the
 * model's formula (model.h). Run from the repository root. */
#include "catalog.h"
#include "model.h"
#include "model_eval.h"
#include "model_gen.h"
#include "model_serve.h"
#include "mt.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#define INV "examples/seed/inventory.json"
#define RULES "examples/seed/interaction_rules.json"

/* Files the tests write go to a folder of their own (the build folder is
 * build-asan/ under make asan). */
static char tmp[] = "/tmp/sluice-model-test-XXXXXX";

static bool near(double a, double b) { return fabs(a - b) < 1e-9; }

/* A catalog p0..p{n-1} with GIDs gid://p<i>. */
static struct sl_catalog *small_catalog(int n) {
    struct sl_catalog *c = sl_catalog_create();
    for (int i = 0; i < n; i++) {
        char h[16], g[32];
        snprintf(h, sizeof(h), "p%d", i);
        snprintf(g, sizeof(g), "gid://p%d", i);
        sl_catalog_add(c, h, strlen(h), g, strlen(g), NULL, 0);
    }
    return c;
}

static struct sl_model *train_text(const struct sl_catalog *c, const char *tsv,
                                   const struct sl_model_params *p) {
    struct sl_model_data d;
    char err[SL_ERRLEN];
    if (sl_model_data_parse(&d, c, tsv, strlen(tsv), "t.tsv", err, sizeof(err))) return NULL;
    struct sl_model *m = sl_model_train(c, &d, 0, p, err, sizeof(err));
    sl_model_data_free(&d);
    return m;
}

static void test_mt(void) {
    struct sl_mt mt;
    sl_mt_seed(&mt, 1);
    TEST("mt: random.seed(1); random() is CPython's", sl_mt_random(&mt) == 0.13436424411240122);
    TEST("mt: then randint(50, 100) == 98", sl_mt_randint(&mt, 50, 100) == 98);
    TEST("mt: then choice(range(10)) == 1", sl_mt_below(&mt, 10) == 1);
    sl_mt_seed(&mt, 0);
    TEST("mt: seed 0, getrandbits(32)", sl_mt_u32(&mt) == 3626764237u);
    sl_mt_seed(&mt, (UINT64_C(1) << 40) + 5);
    TEST("mt: a seed over 32 bits uses two key words",
         sl_mt_u32(&mt) == 2166296868u && sl_mt_u32(&mt) == 2220160828u);
}

static void test_gen(void) {
    char err[SL_ERRLEN];
    struct sl_buf a = {0}, b = {0}, c = {0};
    struct sl_model_gen *g = sl_model_gen_load(INV, RULES, err, sizeof(err));
    TEST("gen: loads the seed's inventory and rules", g != NULL);
    if (!g) return;
    sl_model_gen_tsv(g, 1, 1730000000, &a);
    sl_model_gen_tsv(g, 1, 1730000000, &b);
    sl_model_gen_tsv(g, 2, 1730000000, &c);
    TEST("gen: the same seed gives the same bytes", a.len == b.len && !memcmp(a.data, b.data, a.len));
    TEST("gen: another seed gives other lines", a.len != c.len || memcmp(a.data, c.data, a.len));
    TEST("gen: seed 1 starts as Python's",
         !strncmp(a.data, "1\tuser_1\tthermometer\t1728477837\tHealth\n"
                          "1\tuser_1\tblood-pressure-monitor\t1729000221\tHealth\n", 84));
    TEST("gen: seed 1 is Python's file, byte for byte (length and FNV-1a)",
         a.len == 2763528 && sl_catalog_fnv(SL_CATALOG_FNV_INIT, a.data, a.len) ==
                                 UINT64_C(0x15cd1e90f8955f29));
    /* Rules visible in the output: users user_1..user_149, 50..100 first
     * products with 1..10 follow-ups each, timestamps in the 30 days. */
    size_t lines = 0, users = 0, bad_ts = 0;
    char last[32] = "";
    for (char *p = a.data; p < a.data + a.len; p = strchr(p, '\n') + 1) {
        char user[32];
        long long ts;
        if (sscanf(p, "1\t%31[^\t]\t%*[^\t]\t%lld\t", user, &ts) != 2) break;
        lines++;
        if (strcmp(user, last)) { users++; snprintf(last, sizeof(last), "%s", user); }
        bad_ts += ts < 1730000000 - 30 * 86400 || ts > 1730000000;
    }
    TEST("gen: every line is label 1, user, handle, timestamp, category", lines == 70888);
    TEST("gen: users user_1 .. user_149 (max_users - 1)", users == 149 && !strcmp(last, "user_149"));
    TEST("gen: timestamps within the 30 days before now", bad_ts == 0);

    struct sl_buf cat = {0};
    TEST("gen: writes the catalog", sl_model_gen_catalog(g, &cat, err, sizeof(err)) == SL_OK);
    TEST("gen: the catalog lists towel-1 in Home and Sports, with its GID",
         strstr(cat.data, "{\"handle\":\"towel-1\",\"gid\":\"gid://shopify/Product/10334956159307\","
                          "\"title\":\"Towel\",\"category\":\"Home\",\"categories\":[\"Home\",\"Sports\"]") != NULL);
    struct sl_catalog *products = sl_model_gen_products(g);
    TEST("gen: 238 products, in handle order", sl_catalog_count(products) == 238 &&
         !strcmp(sl_catalog_handle(products, 0), "action-figure"));
    sl_catalog_destroy(products);
    sl_buf_free(&cat);
    sl_model_gen_destroy(g);
    sl_buf_free(&a);
    sl_buf_free(&b);
    sl_buf_free(&c);

    g = sl_model_gen_load(INV, "examples/seed/README.md", err, sizeof(err));
    TEST("gen: a rules file that is not JSON is refused, naming it",
         !g && strstr(err, "examples/seed/README.md") != NULL);
}

static void test_data(void) {
    struct sl_catalog *c = small_catalog(3);
    struct sl_model_data d;
    char err[SL_ERRLEN];
    const char *tsv = "1\tu1\tp0\t5\tC\n1\tu1\tnope\t6\tC\n0\tu1\tp1\t7\tC\r\n\n1\tu2\tp2\t1\tC\n1\tu2\tp1\t0\n";
    TEST("data: parses, skipping label 0 and unknown handles",
         sl_model_data_parse(&d, c, tsv, strlen(tsv), "t.tsv", err, sizeof(err)) == SL_OK &&
         d.n == 3 && d.skipped == 2 && d.nseq == 2);
    sl_model_data_order_by_time(&d);
    TEST("data: ordered by timestamp within a user", d.items[1] == 1 && d.items[2] == 2);
    sl_model_data_free(&d);
    TEST("data: a bad timestamp names file and line",
         sl_model_data_parse(&d, c, "1\tu\tp0\t5\n1\tu\tp1\tx\n", 19, "t.tsv", err, sizeof(err)) &&
         strstr(err, "t.tsv:2: timestamp") != NULL);
    TEST("data: too few fields is an error",
         sl_model_data_parse(&d, c, "1\tu\tp0\n", 7, "t.tsv", err, sizeof(err)) &&
         strstr(err, "t.tsv:1") != NULL);
    TEST("data: nothing usable is an error",
         sl_model_data_parse(&d, c, "1\tu\tzz\t1\n", 9, "t.tsv", err, sizeof(err)) &&
         strstr(err, "no line") != NULL);
    sl_catalog_destroy(c);
}

static void test_scores(void) {
    struct sl_catalog *c = small_catalog(6);
    struct sl_model_params p;
    struct sl_model_result r = {0};
    sl_model_params_default(&p);
    p.lag = 1;
    /* p0 is followed by p1 twice and p2 once; p3 is popular and follows nothing. */
    const char *tsv = "1\tu1\tp0\t1\n1\tu1\tp1\t2\n1\tu2\tp0\t1\n1\tu2\tp1\t2\n"
                      "1\tu3\tp0\t1\n1\tu3\tp2\t2\n1\tu4\tp3\t1\n1\tu5\tp3\t1\n1\tu6\tp3\t1\n"
                      "1\tu7\tp3\t1\n";
    struct sl_model *m = train_text(c, tsv, &p);
    TEST("train: a model from a small TSV", m != NULL);
    if (!m) return;
    /* pop: p0 3, p1 2, p2 1, p3 4 (total 10); out[p0] = 3. */
    const char *w0[] = {"p0"};
    sl_model_recommend(m, w0, NULL, 1, 3, &r);
    TEST("score: p1 follows p0 most", r.n == 3 && r.items[0] == 1 && r.items[1] == 2 && r.items[2] == 3);
    TEST("score: (co + alpha * pop share) / (out + alpha)",
         near(r.scores[0], (2 + 0.2) / 4) && near(r.scores[1], (1 + 0.1) / 4) &&
         near(r.scores[2], 0.4 / 4));
    TEST("score: GIDs come with the products", !strcmp(r.gids[0], "gid://p1"));
    uint32_t hist[] = {0}, cands[] = {1, 2, 3, 4};
    double s[4];
    sl_model_score(m, hist, 1, cands, 4, s);
    TEST("score: the evaluation scores agree with recommend",
         near(s[0], r.scores[0]) && near(s[1], r.scores[1]) && near(s[2], r.scores[2]) && s[3] == 0);

    const char *w01[] = {"p0", "p1"};
    sl_model_recommend(m, w01, NULL, 2, 5, &r);
    bool excluded = true;
    for (size_t i = 0; i < r.n; i++) excluded = excluded && r.items[i] != 0 && r.items[i] != 1;
    TEST("exclude: products of the window are never recommended", excluded && r.n == 4);

    sl_model_recommend(m, NULL, NULL, 0, 6, &r);
    TEST("fallback: an empty window gets popularity order",
         r.known == 0 && r.n == 6 && r.items[0] == 3 && r.items[1] == 0 && r.items[2] == 1 &&
         near(r.scores[0], 0.4) && r.items[4] == 4 && r.items[5] == 5);
    const char *unk[] = {"nope", "other"};
    struct sl_model_result r2 = {0};
    sl_model_recommend(m, unk, NULL, 2, 6, &r2);
    TEST("fallback: a window of unknown handles is an empty window",
         r2.known == 0 && r2.n == 6 && !memcmp(r.items, r2.items, sizeof(r.items[0]) * 6));
    TEST("recommend: top_n out of range is refused", sl_model_recommend(m, w0, NULL, 1, 0, &r2) == SL_ERR &&
         sl_model_recommend(m, w0, NULL, 1, SL_MODEL_MAX_TOP + 1, &r2) == SL_ERR);

    /* Recency: the newest item weighs most; timestamps order the window. */
    const char *a[] = {"p0", "p4"}, *b[] = {"p4", "p0"};
    int64_t ts_rev[] = {20, 10};
    sl_model_recommend(m, a, NULL, 2, 1, &r);
    sl_model_recommend(m, b, NULL, 2, 1, &r2);
    TEST("recency: the newer p0 gives a higher score to its follower",
         r.items[0] == 1 && r2.items[0] == 1 && r2.scores[0] > r.scores[0]);
    sl_model_recommend(m, a, ts_rev, 2, 1, &r);
    TEST("recency: timestamps out of order are put in order", near(r.scores[0], r2.scores[0]));

    /* Online learning: p5 starts following p3. */
    const char *obs[] = {"p3", "p5"};
    const char *w3[] = {"p3"};
    sl_model_recommend(m, w3, NULL, 1, 1, &r);
    uint32_t before = r.items[0];
    for (int i = 0; i < 5; i++) sl_model_observe(m, obs, 2);
    sl_model_recommend(m, w3, NULL, 1, 1, &r);
    TEST("observe: a pair seen in the stream is learned", before != 5 && r.items[0] == 5);
    sl_model_recommend(m, NULL, NULL, 0, 2, &r);
    TEST("observe: popularity follows the stream", r.items[0] == 5 && near(r.scores[0], 5.0 / 15));
    sl_model_result_free(&r);
    sl_model_result_free(&r2);
    sl_model_destroy(m);

    /* Bounded rows: with max_neighbors 2 a product keeps its 2 strongest. */
    p.max_neighbors = 2;
    m = train_text(c, "1\tu\tp0\t1\n1\tu\tp1\t1\n1\tv\tp0\t1\n1\tv\tp1\t1\n1\tw\tp0\t1\n1\tw\tp2\t1\n"
                      "1\tx\tp0\t1\n1\tx\tp3\t1\n", &p);
    const char *w[] = {"p0"};
    sl_model_recommend(m, w, NULL, 1, 5, &r);
    /* p0: p1 twice, p2 and p3 once: p3 (the higher number) is pruned;
     * pop p0 4, p1 2, p2 1, p3 1 of 8; out[p0] = 4. */
    TEST("bounded: a pruned follower scores by popularity only",
         r.items[0] == 1 && r.items[1] == 2 && r.items[2] == 3 && near(r.scores[0], (2 + 0.25) / 5) &&
         near(r.scores[1], (1 + 0.125) / 5) && near(r.scores[2], 0.125 / 5));
    for (int i = 0; i < 50; i++) {
        char h[8];
        snprintf(h, sizeof(h), "p%d", 2 + i % 4);
        const char *o[] = {"p0", h};
        sl_model_observe(m, o, 2);
    }
    struct sl_buf enc = {0};
    sl_model_encode(m, &enc);
    char err[SL_ERRLEN];
    struct sl_model *back = sl_model_decode(enc.data, enc.len, "m", err, sizeof(err));
    /* decode refuses a row longer than max_neighbors */
    TEST("bounded: a row stays within max_neighbors while learning", back != NULL);
    sl_model_destroy(back);
    sl_buf_free(&enc);
    sl_model_result_free(&r);
    sl_model_destroy(m);
    sl_catalog_destroy(c);
}

static void test_files(void) {
    char err[SL_ERRLEN];
    struct sl_model_gen *g = sl_model_gen_load(INV, RULES, err, sizeof(err));
    struct sl_catalog *cat = sl_model_gen_products(g);
    struct sl_buf tsv = {0}, e1 = {0}, e2 = {0}, bad = {0};
    struct sl_model_data d;
    struct sl_model_params p;
    struct sl_model_result r1 = {0}, r2 = {0};

    sl_model_params_default(&p);
    sl_model_gen_tsv(g, 3, SL_MODEL_GEN_NOW, &tsv);
    sl_model_data_parse(&d, cat, tsv.data, tsv.len, "gen", err, sizeof(err));
    struct sl_model *m1 = sl_model_train(cat, &d, 0, &p, err, sizeof(err));
    struct sl_model *m2 = sl_model_train(cat, &d, 0, &p, err, sizeof(err));
    sl_model_encode(m1, &e1);
    sl_model_encode(m2, &e2);
    TEST("train: deterministic, byte for byte", e1.len == e2.len && !memcmp(e1.data, e2.data, e1.len));
    TEST("file: the header says format, catalog, params and data",
         !strncmp(e1.data, "sluice-model 1\ncatalog fnv1a64:", 31) &&
         strstr(e1.data, "\nparams lag=10 lag_decay=0.5 history=10 history_decay=0.5 alpha=1 "
                         "max_neighbors=256\ndata lines=") != NULL);

    char path[300];
    snprintf(path, sizeof(path), "%s/model_test.model", tmp);
    TEST("file: saves", sl_model_save(m1, path, err, sizeof(err)) == SL_OK);
    struct sl_model *l = sl_model_load(path, err, sizeof(err));
    TEST("file: loads what it saved", l != NULL);
    const char *win[] = {"shirt", "jeans", "laptop"};
    sl_model_recommend(m1, win, NULL, 3, 10, &r1);
    if (l) sl_model_recommend(l, win, NULL, 3, 10, &r2);
    TEST("file: the loaded model recommends the same, scores and all",
         l && r1.n == 10 && r1.n == r2.n && !memcmp(r1.items, r2.items, sizeof(r1.items)) &&
         !memcmp(r1.scores, r2.scores, sizeof(r1.scores)));
    sl_buf_reset(&e2);
    if (l) sl_model_encode(l, &e2);
    TEST("file: load then save gives the same bytes", e1.len == e2.len && !memcmp(e1.data, e2.data, e1.len));
    TEST("file: the catalog it was trained for passes the check",
         l && sl_model_check_catalog(l, cat, "c.json", err, sizeof(err)) == SL_OK);
    struct sl_catalog *other = small_catalog(3);
    TEST("file: another catalog is refused with both hashes and a way out",
         l && sl_model_check_catalog(l, other, "c.json", err, sizeof(err)) == SL_ERR &&
         strstr(err, "trained for catalog fnv1a64:") && strstr(err, "c.json is fnv1a64:") &&
         strstr(err, "sluice model train"));
    sl_catalog_destroy(other);
    sl_model_destroy(l);

    TEST("file: a missing file names it", !sl_model_load("/nonexistent/none.model", err, sizeof(err)) &&
         strstr(err, "none.model") != NULL);
    TEST("file: not a model file", !sl_model_decode("hello\n", 6, "x", err, sizeof(err)) &&
         strstr(err, "not a sluice model file") != NULL);
    sl_buf_add(&bad, e1.data, e1.len);
    bad.data[13] = '2';
    TEST("file: another format version is refused, saying which and what to do",
         !sl_model_decode(bad.data, bad.len, "x", err, sizeof(err)) &&
         strstr(err, "format version 2; this sluice reads version 1") && strstr(err, "sluice model train"));
    memcpy(bad.data, e1.data, e1.len);
    bad.data[e1.len - 100] ^= 0x40;
    TEST("file: a flipped body byte is caught by the checksum",
         !sl_model_decode(bad.data, bad.len, "x", err, sizeof(err)) && strstr(err, "checksum") != NULL);
    /* Every truncation, and every single-byte change of the header, fails
     * cleanly or (a harmless header change) still loads. */
    size_t rejected = 0;
    for (size_t n = 0; n < e1.len; n += (n < 600 ? 1 : 997)) {
        struct sl_model *t = sl_model_decode(e1.data, n, "x", err, sizeof(err));
        rejected += t == NULL;
        sl_model_destroy(t);
    }
    size_t tried = 600 + (e1.len - 600 + 996) / 997;
    TEST("file: every truncated file is rejected", rejected == tried);
    const char *hend = strstr(e1.data, "\n\n");
    for (size_t i = 0; i < (size_t)(hend - e1.data) + 2; i++) {
        memcpy(bad.data, e1.data, e1.len);
        bad.data[i] = (char)(bad.data[i] + 1);
        sl_model_destroy(sl_model_decode(bad.data, bad.len, "x", err, sizeof(err)));
    }
    TEST("file: header bytes changed one at a time never crash", true);
    sl_model_result_free(&r1);
    sl_model_result_free(&r2);
    sl_model_destroy(m1);
    sl_model_destroy(m2);
    sl_model_data_free(&d);
    sl_buf_free(&tsv);
    sl_buf_free(&e1);
    sl_buf_free(&e2);
    sl_buf_free(&bad);
    sl_catalog_destroy(cat);
    sl_model_gen_destroy(g);
    remove(path);
}

static void test_eval(void) {
    unsigned char lab[] = {1, 0, 0, 1};
    double perfect[] = {0.9, 0.1, 0.2, 0.8}, reversed[] = {0.1, 0.9, 0.8, 0.2}, tied[] = {1, 1, 1, 1};
    TEST("auc: perfect ranking", sl_model_eval_auc(perfect, lab, 4) == 1);
    TEST("auc: reversed ranking", sl_model_eval_auc(reversed, lab, 4) == 0);
    TEST("auc: ties count one half", sl_model_eval_auc(tied, lab, 4) == 0.5);
    TEST("auc: no negatives is undefined", sl_model_eval_auc(perfect, (unsigned char[]){1, 1, 1, 1}, 4) == -1);

    static const uint64_t seeds[] = {2};
    struct sl_model_eval_opts o = {INV, RULES, NULL, seeds, 1, NULL, 0, SL_MODEL_GEN_NOW, {0}};
    struct sl_model_eval_result a, b;
    char err[SL_ERRLEN];
    sl_model_params_default(&o.params);
    int ra = sl_model_eval_run(&o, &a, err, sizeof(err));
    int rb = sl_model_eval_run(&o, &b, err, sizeof(err));
    TEST("eval: runs the protocol", ra == SL_OK && rb == SL_OK && a.users == 149);
    TEST("eval: the same figures twice",
         !memcmp(a.model, b.model, sizeof(a.model)) && !memcmp(a.pop, b.pop, sizeof(a.pop)));
    TEST("eval: the model beats the seed's SLi-Rec (0.86) in file order", a.model[0].auc > 0.92);
    TEST("eval: popularity is near chance against popularity-weighted negatives",
         fabs(a.pop[0].auc - 0.5) < 0.1);
    TEST("eval: order by timestamp leaves no signal", fabs(a.model[1].auc - 0.5) < 0.1);
    TEST("eval: figures are shares", a.model[0].hr > 0 && a.model[0].hr <= 1 &&
         a.model[0].ndcg > 0 && a.model[0].ndcg <= a.model[0].hr && a.model[0].gauc <= 1);
}

static void test_serve(void) {
    char err[SL_ERRLEN];
    struct sl_buf out = {0}, first = {0};
    char path[300];
    snprintf(path, sizeof(path), "%s/model_test_serve.model", tmp);
    struct sl_model_gen *g = sl_model_gen_load(INV, RULES, err, sizeof(err));
    struct sl_catalog *cat = sl_model_gen_products(g);
    struct sl_buf tsv = {0};
    struct sl_model_data d;
    struct sl_model_params p;
    sl_model_params_default(&p);
    sl_model_gen_tsv(g, 1, SL_MODEL_GEN_NOW, &tsv);
    sl_model_data_parse(&d, cat, tsv.data, tsv.len, "gen", err, sizeof(err));
    struct sl_model *m = sl_model_train(cat, &d, 0, &p, err, sizeof(err));
    sl_model_save(m, path, err, sizeof(err));
    struct sl_model_serve_opts o = {path, "127.0.0.1:0", NULL, 5};
    struct sl_model_serve *s = sl_model_serve_create(NULL, &o, err, sizeof(err));
    TEST("serve: loads the model", s != NULL);
    if (!s) goto done;

    const char *json = "application/json";
    const char *split = "{\"dataframe_split\":{\"columns\":[\"userId\",\"items\",\"timestamps\"],"
                        "\"data\":[[\"u1\",[\"shirt\",\"jeans\"],[1,2]],[\"u2\",[],[]]]}}";
    int st = sl_model_serve_invocations(s, json, split, strlen(split), &out);
    TEST("serve: dataframe_split answers one prediction per row",
         st == 200 && !strncmp(out.data, "{\"predictions\":[{\"itemIds\":[\"gid://shopify/Product/", 51) &&
         strstr(out.data, "]},{\"itemIds\":[") != NULL);
    sl_buf_add(&first, out.data, out.len);
    const char *recs = "{\"dataframe_records\":[{\"userId\":\"u1\",\"items\":[\"shirt\",\"jeans\"],"
                       "\"timestamps\":[1,2]},{\"userId\":\"u2\",\"items\":[]}]}";
    st = sl_model_serve_invocations(s, "Application/JSON; charset=utf-8", recs, strlen(recs), &out);
    TEST("serve: dataframe_records gives the same answer", st == 200 && out.len == first.len &&
         !memcmp(out.data, first.data, out.len));
    const char *cols = "{\"inputs\":{\"userId\":[\"u1\",\"u2\"],\"items\":[[\"shirt\",\"jeans\"],[]]}}";
    st = sl_model_serve_invocations(s, json, cols, strlen(cols), &out);
    TEST("serve: inputs as columns gives the same answer", st == 200 && out.len == first.len &&
         !memcmp(out.data, first.data, out.len));

    static const struct { const char *what, *body, *msg; } bad[] = {
        {"not JSON", "nope", "not JSON"},
        {"no input", "{\"rows\":[]}", "unknown field \\\"rows\\\""},
        {"two inputs", "{\"inputs\":[],\"dataframe_records\":[]}", "send exactly one"},
        {"items not a list", "{\"inputs\":[{\"items\":\"shirt\"}]}", "inputs[0].items: expected a list"},
        {"a handle not a string", "{\"inputs\":[{\"items\":[\"a\",2]}]}", "inputs[0].items[1]"},
        {"timestamps of another length", "{\"inputs\":[{\"items\":[\"a\",\"b\"],\"timestamps\":[1]}]}",
         "1 timestamps for 2 items"},
        {"split without items", "{\"dataframe_split\":{\"columns\":[\"userId\"],\"data\":[[\"u\"]]}}",
         "no \\\"items\\\" column"},
        {"split row of another width", "{\"dataframe_split\":{\"columns\":[\"items\",\"timestamps\"],"
         "\"data\":[[[\"a\"]]]}}", "dataframe_split.data[0]: expected a list of 2 values"},
        {"a list at the top", "[]", "expected a JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char name[128];
        st = sl_model_serve_invocations(s, json, bad[i].body, strlen(bad[i].body), &out);
        snprintf(name, sizeof(name), "serve: 400 with a message on %s", bad[i].what);
        TEST(name, st == 400 && strstr(out.data, "\"error_code\":\"BAD_REQUEST\"") &&
             strstr(out.data, bad[i].msg));
    }
    TEST("serve: another Content-Type is 415",
         sl_model_serve_invocations(s, "text/plain", "{}", 2, &out) == 415);
    TEST("serve: no Content-Type is 400", sl_model_serve_invocations(s, NULL, "{}", 2, &out) == 400);

    FILE *f = fopen(path, "wb");
    fputs("sluice-model 9\n", f);
    fclose(f);
    TEST("serve: a bad file on reload keeps the model served",
         sl_model_serve_reload(s, err, sizeof(err)) == SL_ERR && strstr(err, "format version 9") &&
         sl_model_serve_invocations(s, json, recs, strlen(recs), &out) == 200 &&
         out.len == first.len && !memcmp(out.data, first.data, out.len));
    sl_model_save(m, path, err, sizeof(err));
    TEST("serve: a good file reloads", sl_model_serve_reload(s, err, sizeof(err)) == SL_OK);

done:
    sl_model_serve_destroy(s);
    sl_model_destroy(m);
    sl_model_data_free(&d);
    sl_buf_free(&tsv);
    sl_buf_free(&out);
    sl_buf_free(&first);
    sl_catalog_destroy(cat);
    sl_model_gen_destroy(g);
    remove(path);
}

int main(void) {
    sl_log_set_level(SL_LOG_ERROR);
    if (!mkdtemp(tmp)) return 1;
    test_mt();
    test_gen();
    test_data();
    test_scores();
    test_files();
    test_eval();
    test_serve();
    rmdir(tmp);
    return TEST_DONE();
}
