/* main.c -- the sluice command line: parses arguments and calls the units. */
#define _GNU_SOURCE
#include "broker.h"
#include "counts.h"
#include "model.h"
#include "model_eval.h"
#include "model_gen.h"
#include "model_serve.h"
#include "replay.h"
#include "sl.h"
#include "tester.h"
#include "worker.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_main[] =
"usage: sluice COMMAND [OPTIONS]\n"
"\n"
"sluice is a stream processor: a C core consuming Kafka, with rules in Lua that\n"
"can be changed and reloaded (SIGHUP) while the stream runs.\n"
"\n"
"commands:\n"
"  run      run the job of a config: collector, pipeline, admin listener\n"
"  check    load a config and compile every rule; exit 1 with file:line\n"
"  test     run JSON lines through the steps without Kafka and trace each step\n"
"  broker   run the embedded Kafka-protocol broker as its own process\n"
"  replay   put dead-lettered records back into their source topic\n"
"  counts   print each step's counts of a running instance (from /metrics)\n"
"  model    the built-in recommendation model: gen, train, eval, serve\n"
"\n"
"`sluice COMMAND --help` explains a command's options.\n";

static const char usage_run[] =
"usage: sluice run -c CONFIG [-v]\n"
"\n"
"Runs the job of CONFIG (a Lua file returning a table) on one event loop until\n"
"SIGTERM or SIGINT: stop consuming, finish records in flight (bounded by\n"
"shutdown_timeout), commit, exit 0. SIGHUP reads CONFIG again and reloads the\n"
"Lua rules into a fresh VM with the steps' new params; the new rules first run\n"
"over a sample (rules.canary and the last rules.canary_last input records) and\n"
"are refused if they raise where the old ones did not or filter far more. A\n"
"reload that fails or is refused (also: a changed key that needs a restart,\n"
"named in the log) keeps the old rules and config and logs why (file:line).\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -v, --verbose       log debug lines\n"
"  -h, --help          this text\n"
"\n"
"Exit status: 0 after a clean stop, 1 on a configuration or sink error, 70 when\n"
"the watchdog stopped a rule that ran past rules.watchdog (restart the process:\n"
"the record is then dead-lettered instead of run again).\n";

static const char usage_check[] =
"usage: sluice check -c CONFIG [--against EVENTS.jsonl [--baseline DIR]]\n"
"\n"
"Loads CONFIG and compiles every rule module it names. Prints the step count and\n"
"the rules' version and exits 0, or prints the error (file:line, or the config\n"
"key path) and exits 1.\n"
"\n"
"With --against, the rules then run over the lines of EVENTS.jsonl (one record\n"
"value per line) as a reload's canary runs them: the lua steps only; a sink step\n"
"passes the context on, a window, model or http step holds it after its request\n"
"rule, if any, ran (nothing is sent); the lua steps after it are not checked\n"
"offline (a reload runs them on contexts sampled in the running job): the\n"
"summary says so. With --baseline DIR (the deployed rules: a folder, or\n"
"several separated by :, in place of rules.path) the check is refused as a\n"
"reload would be: the rules raise on a line the deployed rules handle, or filter\n"
"more lines that those pass than rules.canary_filter_slack (default 5) or\n"
"rules.canary_filter_slack_pct (default 10%) of the lines allow. Without\n"
"--baseline any raise refuses. Refused: exit 1 and the summary (step, how many,\n"
"the first error with file:line and its line) on stderr; else the counts on\n"
"stdout.\n"
"\n"
"  -c, --config FILE    the job configuration\n"
"  -a, --against FILE   JSON lines to run the rules over\n"
"  -b, --baseline DIR   the deployed rules to compare with (needs --against)\n"
"  -h, --help           this text\n";

static const char usage_test[] =
"usage: sluice test -c CONFIG -i EVENTS.jsonl [--stub STEP=FILE]...\n"
"                   [--summary | --emit-spec] [--allow-errors] [--log-level LEVEL]\n"
"\n"
"Runs each line of EVENTS.jsonl (one Kafka record value per line; - for stdin)\n"
"through the pipeline without Kafka and prints, per record and step, one JSON\n"
"line: {\"record\":N,\"step\":NAME, then \"ctx\" (the context after the step,\n"
"without input), \"filtered\" (the reason) and \"ctx\" (the context it dropped,\n"
"with input), \"produce\" (what a kafka step would send), or \"request\" (what\n"
"an http or model step would send: method, url, headers with secrets redacted,\n"
"body)}. A dead letter's line starts with its error: {\"error\":E,\"record\":N,\n"
"\"step\":NAME,\"dead_letter\":{...}}. Contexts split from record N are \"N.1\",\n"
"\"N.2\", ... A line that is not JSON gives {\"record\":N,\"line\":L,\"not_json\":E}\n"
"(and file:line on stderr) and runs with the text as input. Object keys are\n"
"sorted and the run's wall-clock fields (kafka.timestamp, a dead letter's \"at\")\n"
"left out: the same input gives the same trace, fit for a golden file.\n"
"HTTP steps send nothing: a stub answers them, or the context stops after its\n"
"request (\"stopped\"). Logs, sluice.log() and print() go to stderr.\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -i, --input FILE    the records, one JSON value per line\n"
"  -S, --stub STEP=FILE  answer http/model step STEP with the canned response in\n"
"                      FILE, a JSON object {\"status\": 200, \"headers\": {...},\n"
"                      \"body\": <string or JSON>}; repeat for several steps\n"
"  -s, --summary       print no trace, only the time taken and the counts per\n"
"                      step and filter reason (Prometheus text)\n"
"  -E, --emit-spec     print, instead of the trace, a busted spec of it: per\n"
"                      record and lua step an it() that runs the step with\n"
"                      sluice.testing's run_step on the context it started on\n"
"                      and asserts what the trace showed (the context, the\n"
"                      list, the reason or the error); edit it, run busted\n"
"  -e, --allow-errors  exit 0 even when records were dead-lettered\n"
"  -l, --log-level L   debug, info (default), warn or error: what goes to stderr\n"
"  -h, --help          this text\n"
"\n"
"Exit status: 0, or 1 when a record was dead-lettered (a summary on stderr: per\n"
"step how many, the first error and its line), or when the config, the input or\n"
"a stub cannot be read.\n";

static const char usage_broker[] =
"usage: sluice broker [--partitions N] [--topics a,b] [--brokers N]\n"
"\n"
"Runs the embedded Kafka-protocol broker (librdkafka's mock cluster) as its own\n"
"process on 127.0.0.1 and prints its bootstrap address on the first line of\n"
"stdout. Any Kafka client can produce and consume (kcat -b ADDRESS ...). It is in\n"
"memory and keeps only the last 5 MiB of each partition: for a laptop, a demo\n"
"and small tests, never for volume. Stops on SIGTERM or SIGINT.\n"
"\n"
"  -p, --partitions N  partitions of each topic created (default 4)\n"
"  -t, --topics LIST   topics to create up front, comma-separated (others are\n"
"                      created on first use with the default partitions)\n"
"  -b, --brokers N     brokers in the cluster (default 1)\n"
"  -h, --help          this text\n";

static const char usage_replay[] =
"usage: sluice replay -c CONFIG [--dry-run]\n"
"\n"
"Reads the dead-letter topic of CONFIG (kafka.dead_letter) in the consumer group\n"
"<kafka.group>.replay and produces each record's original value, with its\n"
"original key, to the topic it came from; commits after the broker acknowledged\n"
"it and exits once it has caught up. Run it after fixing the rule. Needs\n"
"kafka.brokers (or KAFKA_BROKERS) to name a reachable broker.\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -n, --dry-run       print what would be replayed; produce and commit nothing\n"
"  -h, --help          this text\n";

static void help(const char *text, int status) {
    fputs(text, status ? stderr : stdout);
    exit(status);
}

static int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *config = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else if (c == 'v') sl_log_set_level(SL_LOG_DEBUG);
        else help(usage_run, c == 'h' ? 0 : 2);
    }
    if (!config || optind < argc) help(usage_run, 2);
    return sl_worker_run(config);
}

static int cmd_check(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"against", required_argument, NULL, 'a'},
        {"baseline", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = NULL, *against = NULL, *baseline = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:a:b:h", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else if (c == 'a') against = optarg;
        else if (c == 'b') baseline = optarg;
        else help(usage_check, c == 'h' ? 0 : 2);
    }
    if (!config || optind < argc || (baseline && !against)) help(usage_check, 2);
    return sl_tester_check(config, against, baseline);
}

static int cmd_test(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"input", required_argument, NULL, 'i'},
        {"stub", required_argument, NULL, 'S'}, {"summary", no_argument, NULL, 's'},
        {"allow-errors", no_argument, NULL, 'e'}, {"log-level", required_argument, NULL, 'l'},
        {"emit-spec", no_argument, NULL, 'E'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const char *config = NULL, *input = NULL, *stubs[64];
    size_t nstubs = 0;
    bool summary = false, allow_errors = false, emit_spec = false;
    int c, level = SL_LOG_INFO;
    while ((c = getopt_long(argc, argv, "c:i:S:sel:Eh", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else if (c == 'i') input = optarg;
        else if (c == 'S' && nstubs < sizeof(stubs) / sizeof(stubs[0])) stubs[nstubs++] = optarg;
        else if (c == 's') summary = true;
        else if (c == 'e') allow_errors = true;
        else if (c == 'E') emit_spec = true;
        else if (c == 'l') {
            for (level = 0; level < 4 && strcmp(levels[level], optarg); level++) {}
            if (level == 4) {
                fprintf(stderr, "sluice test: --log-level %s: expected debug, info, warn or "
                        "error\n", optarg);
                return 2;
            }
        } else help(usage_test, c == 'h' ? 0 : 2);
    }
    if (!config || !input || optind < argc || (summary && emit_spec)) help(usage_test, 2);
    sl_log_set_level((enum sl_log_level)level);
    struct sl_tester_opts t = {config, input, stdout, summary, emit_spec, stubs, nstubs,
                               allow_errors};
    return sl_tester_run(&t);
}

static int cmd_broker(int argc, char **argv) {
    static const struct option opts[] = {
        {"partitions", required_argument, NULL, 'p'}, {"topics", required_argument, NULL, 't'},
        {"brokers", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int partitions = SL_BROKER_PARTITIONS, nbrokers = 1, c, sig;
    char *topics_arg = NULL, err[SL_ERRLEN];
    const char *topics[256];
    size_t ntopics = 0;
    while ((c = getopt_long(argc, argv, "p:t:b:h", opts, NULL)) != -1) {
        if (c == 'p') partitions = atoi(optarg);
        else if (c == 't') topics_arg = optarg;
        else if (c == 'b') nbrokers = atoi(optarg);
        else help(usage_broker, c == 'h' ? 0 : 2);
    }
    if (partitions < 1 || nbrokers < 1 || optind < argc) help(usage_broker, 2);
    for (char *t = topics_arg ? strtok(topics_arg, ",") : NULL; t && ntopics < 256;
         t = strtok(NULL, ","))
        topics[ntopics++] = t;

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);   /* before librdkafka starts threads */
    struct sl_broker *b = sl_broker_create(nbrokers, partitions, topics, ntopics, err,
                                           sizeof(err));
    if (!b) {
        fprintf(stderr, "sluice broker: %s\n", err);
        return 1;
    }
    printf("%s\n", sl_broker_address(b));
    fflush(stdout);
    sl_log(SL_LOG_WARN, "broker", "embedded broker on %s: in memory, keeps only the last "
           "5 MiB of each partition; for a laptop, a demo and small tests",
           sl_broker_address(b));
    sigwait(&set, &sig);
    sl_broker_destroy(b);
    return 0;
}

static int cmd_replay(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"dry-run", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *config = NULL;
    bool dry = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:nh", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else if (c == 'n') dry = true;
        else help(usage_replay, c == 'h' ? 0 : 2);
    }
    if (!config || optind < argc) help(usage_replay, 2);
    return sl_replay_run(config, dry);
}

/* ==================== sluice model ==================== */

static const char usage_model[] =
"usage: sluice model gen|train|eval|serve [OPTIONS]\n"
"\n"
"The built-in recommendation model: sequential co-visitation of products,\n"
"trained in well under a second, served over the MLflow scoring protocol.\n"
"\n"
"  gen     write the seed's synthetic interaction TSV and the demo catalog\n"
"  train   train a model file from an interaction TSV\n"
"  eval    the seed notebook's evaluation protocol: AUC, gAUC, HR@10, NDCG@10\n"
"  serve   an MLflow scoring server (POST /invocations) for a model file\n"
"\n"
"`sluice model COMMAND --help` explains a command's options.\n";

static const char usage_model_gen[] =
"usage: sluice model gen [--seed N] [--out F.tsv] [--catalog-out F.json]\n"
"\n"
"Writes the seed showcase's synthetic interactions, generated by its rules\n"
"(examples/seed/README.md): the same bytes as the seed's Python generator after\n"
"random.seed(N). Lines: label, user, product handle, unix seconds, category.\n"
"Without --out or --catalog-out the TSV goes to stdout.\n"
"\n"
"  -s, --seed N           generator seed (default 1)\n"
"  -o, --out FILE         write the TSV to FILE\n"
"  -C, --catalog-out FILE write the demo catalog (handle, GID, title, category,\n"
"                         price, image; products in handle order) to FILE\n"
"      --now UNIX         end of the 30 days of timestamps (default 1730822806)\n"
"  -I, --inventory FILE   default examples/seed/inventory.json\n"
"  -R, --rules FILE       default examples/seed/interaction_rules.json\n"
"  -h, --help             this text\n";

static const char usage_model_train[] =
"usage: sluice model train --interactions F.tsv --catalog C --out M\n"
"\n"
"Trains a model from every line of F.tsv (label, user, handle, timestamp\n"
"[, category]; a user's consecutive lines are one sequence, in file order) and\n"
"writes the model file M (versioned: format, catalog hash, parameters, data\n"
"summary). Lines with label 0 or a handle not in the catalog are skipped and\n"
"counted.\n"
"\n"
"  -i, --interactions F   the interaction TSV\n"
"  -c, --catalog C        the catalog JSON ({\"products\": [{\"handle\", \"gid\"}]})\n"
"  -o, --out M            the model file to write (atomically)\n"
"  -t, --order ORDER      file (default) or time: each user's lines by timestamp\n"
"  -p, --param K=V        a model parameter, repeatable: lag (10), lag_decay\n"
"                         (0.5), history (10), history_decay (0.5), alpha (1),\n"
"                         max_neighbors (256)\n"
"  -h, --help             this text\n";

static const char usage_model_eval[] =
"usage: sluice model eval [--interactions F.tsv ...] [--seeds 1,2,3,4,5]\n"
"\n"
"Runs the seed notebook's protocol and prints the table: per user the last line\n"
"is test, the second last valid, the rest train (file order); history = the\n"
"lines before, at most 50; 9 popularity-weighted negatives per test line; AUC\n"
"over all test samples and group AUC, HR@10 and NDCG@10 over the full catalog,\n"
"training time, a popularity baseline, the same with lines ordered by timestamp,\n"
"and the seed's SLi-Rec AUC (0.86) for reference. Without --interactions it\n"
"generates one TSV per seed (as `sluice model gen`) and averages.\n"
"\n"
"  -i, --interactions F   evaluate this TSV (repeatable) instead of generating\n"
"  -S, --seeds LIST       generator (and negative sampling) seeds (default 1,2,3,4,5)\n"
"  -c, --catalog C        the catalog (default: the inventory's products)\n"
"  -p, --param K=V        a model parameter, as for train\n"
"      --now UNIX         as for gen\n"
"  -I, --inventory FILE   default examples/seed/inventory.json\n"
"  -R, --rules FILE       default examples/seed/interaction_rules.json\n"
"  -h, --help             this text\n";

static const char usage_model_serve[] =
"usage: sluice model serve --model M --listen HOST:PORT [--top N]\n"
"\n"
"Serves model file M over the MLflow scoring protocol until SIGTERM or SIGINT.\n"
"POST /invocations (Content-Type: application/json) takes dataframe_split,\n"
"dataframe_records or inputs with the columns userId, items (product handles,\n"
"oldest first) and timestamps (optional, one per item), and answers\n"
"{\"predictions\": [{\"itemIds\": [GID, ...], \"preds\": [score, ...]}]}, one per\n"
"row; bad input is a 400 {\"error_code\": \"BAD_REQUEST\", \"message\": ...}.\n"
"GET /ping and /health answer 200, GET /version the model's header as JSON.\n"
"SIGHUP loads M again; a bad file keeps the model being served.\n"
"\n"
"  -m, --model M          the model file\n"
"  -l, --listen ADDR      host:port (default 127.0.0.1:5000)\n"
"  -n, --top N            recommendations per row (default 10, at most 100)\n"
"  -c, --catalog C        refuse a model trained for another catalog than C\n"
"  -h, --help             this text\n";

#define SEED_INVENTORY "examples/seed/inventory.json"
#define SEED_RULES "examples/seed/interaction_rules.json"

static int parse_param(struct sl_model_params *p, char *kv, const char *usage) {
    char err[SL_ERRLEN], *eq = strchr(kv, '=');
    if (!eq) help(usage, 2);
    *eq = '\0';
    if (sl_model_params_set(p, kv, eq + 1, err, sizeof(err)) == SL_OK) return 0;
    fprintf(stderr, "sluice model: --param %s\n", err);
    return 1;
}

static int cmd_model_gen(int argc, char **argv) {
    static const struct option opts[] = {
        {"seed", required_argument, NULL, 's'}, {"out", required_argument, NULL, 'o'},
        {"catalog-out", required_argument, NULL, 'C'}, {"now", required_argument, NULL, 'N'},
        {"inventory", required_argument, NULL, 'I'}, {"rules", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *out = NULL, *cat = NULL, *inv = SEED_INVENTORY, *rules = SEED_RULES;
    uint64_t seed = 1;
    int64_t now = SL_MODEL_GEN_NOW;
    char err[SL_ERRLEN];
    int c;
    while ((c = getopt_long(argc, argv, "s:o:C:I:R:h", opts, NULL)) != -1) {
        if (c == 's') seed = strtoull(optarg, NULL, 10);
        else if (c == 'o') out = optarg;
        else if (c == 'C') cat = optarg;
        else if (c == 'N') now = strtoll(optarg, NULL, 10);
        else if (c == 'I') inv = optarg;
        else if (c == 'R') rules = optarg;
        else help(usage_model_gen, c == 'h' ? 0 : 2);
    }
    if (optind < argc) help(usage_model_gen, 2);
    if (sl_model_gen_write(inv, rules, seed, now, out ? out : cat ? NULL : "-", cat, err,
                           sizeof(err)) == SL_OK)
        return 0;
    fprintf(stderr, "sluice model gen: %s\n", err);
    return 1;
}

static int cmd_model_train(int argc, char **argv) {
    static const struct option opts[] = {
        {"interactions", required_argument, NULL, 'i'}, {"catalog", required_argument, NULL, 'c'},
        {"out", required_argument, NULL, 'o'}, {"order", required_argument, NULL, 't'},
        {"param", required_argument, NULL, 'p'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *in = NULL, *catalog = NULL, *out = NULL, *order = "file";
    struct sl_model_params params;
    char err[SL_ERRLEN];
    int c;
    sl_model_params_default(&params);
    while ((c = getopt_long(argc, argv, "i:c:o:t:p:h", opts, NULL)) != -1) {
        if (c == 'i') in = optarg;
        else if (c == 'c') catalog = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 't') order = optarg;
        else if (c == 'p') { if (parse_param(&params, optarg, usage_model_train)) return 1; }
        else help(usage_model_train, c == 'h' ? 0 : 2);
    }
    if (!in || !catalog || !out || optind < argc || (strcmp(order, "file") && strcmp(order, "time")))
        help(usage_model_train, 2);
    if (sl_model_train_file(in, catalog, out, !strcmp(order, "time"), &params, err,
                            sizeof(err)) == SL_OK)
        return 0;
    fprintf(stderr, "sluice model train: %s\n", err);
    return 1;
}

static int cmd_model_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"interactions", required_argument, NULL, 'i'}, {"seeds", required_argument, NULL, 'S'},
        {"catalog", required_argument, NULL, 'c'}, {"param", required_argument, NULL, 'p'},
        {"now", required_argument, NULL, 'N'}, {"inventory", required_argument, NULL, 'I'},
        {"rules", required_argument, NULL, 'R'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static const uint64_t default_seeds[] = {1, 2, 3, 4, 5};
    const char *files[SL_MODEL_EVAL_MAX_RUNS];
    uint64_t seeds[SL_MODEL_EVAL_MAX_RUNS];
    struct sl_model_eval_opts o = {SEED_INVENTORY, SEED_RULES, NULL, default_seeds, 5, NULL, 0,
                                   SL_MODEL_GEN_NOW, {0}};
    struct sl_model_eval_result r;
    char err[SL_ERRLEN];
    int c;
    bool bad_seeds = false;
    size_t nfiles = 0, nseeds = 0;
    sl_model_params_default(&o.params);
    while ((c = getopt_long(argc, argv, "i:S:c:p:I:R:h", opts, NULL)) != -1) {
        if (c == 'i' && nfiles < SL_MODEL_EVAL_MAX_RUNS) files[nfiles++] = optarg;
        else if (c == 'S') {
            for (char *t = strtok(optarg, ","); t && nseeds < SL_MODEL_EVAL_MAX_RUNS;
                 t = strtok(NULL, ","))
                seeds[nseeds++] = strtoull(t, NULL, 10);
            o.seeds = seeds;
            o.nseeds = nseeds;
            bad_seeds = !nseeds;
        }
        else if (c == 'c') o.catalog = optarg;
        else if (c == 'p') { if (parse_param(&o.params, optarg, usage_model_eval)) return 1; }
        else if (c == 'N') o.now = strtoll(optarg, NULL, 10);
        else if (c == 'I') o.inventory = optarg;
        else if (c == 'R') o.rules = optarg;
        else help(usage_model_eval, c == 'h' ? 0 : 2);
    }
    if (optind < argc || bad_seeds) help(usage_model_eval, 2);
    if (nfiles) {
        o.files = files;
        o.nfiles = nfiles;
    }
    if (sl_model_eval_run(&o, &r, err, sizeof(err))) {
        fprintf(stderr, "sluice model eval: %s\n", err);
        return 1;
    }
    sl_model_eval_print(&o, &r, stdout);
    return 0;
}

static int cmd_model_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"listen", required_argument, NULL, 'l'},
        {"top", required_argument, NULL, 'n'}, {"catalog", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct sl_model_serve_opts o = {NULL, "127.0.0.1:5000", NULL, 10};
    int c;
    while ((c = getopt_long(argc, argv, "m:l:n:c:h", opts, NULL)) != -1) {
        if (c == 'm') o.model = optarg;
        else if (c == 'l') o.listen = optarg;
        else if (c == 'n') o.top_n = strtoul(optarg, NULL, 10);
        else if (c == 'c') o.catalog = optarg;
        else help(usage_model_serve, c == 'h' ? 0 : 2);
    }
    if (!o.model || !o.top_n || o.top_n > SL_MODEL_MAX_TOP || optind < argc)
        help(usage_model_serve, 2);
    return sl_model_serve_run(&o);
}

static const char usage_counts[] =
"usage: sluice counts [--admin ADDR] [--watch] [--interval SECONDS]\n"
"\n"
"Prints each step of a running instance with its counts since it started:\n"
"records in, out, filtered (then one line per filter reason), errors and\n"
"dead letters. Read from the admin listener's /metrics, so a scrape sees the\n"
"same numbers.\n"
"\n"
"  -a, --admin ADDR       the admin listener, host:port or URL (default:\n"
"                         $ADMIN_LISTEN, else 127.0.0.1:9100)\n"
"  -w, --watch            refresh until interrupted\n"
"  -n, --interval SECONDS between refreshes with --watch (default 2)\n"
"  -h, --help             this text\n"
"\n"
"Exit status 1 when the listener cannot be read.\n";

static int cmd_counts(int argc, char **argv) {
    static const struct option opts[] = {
        {"admin", required_argument, NULL, 'a'}, {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *env = getenv("ADMIN_LISTEN");
    struct sl_counts_opts o = {env && *env ? env : "127.0.0.1:9100", false, 2000};
    int c;
    while ((c = getopt_long(argc, argv, "a:wn:h", opts, NULL)) != -1) {
        if (c == 'a') o.admin = optarg;
        else if (c == 'w') o.watch = true;
        else if (c == 'n') o.interval_ms = (int)(strtod(optarg, NULL) * 1000);
        else help(usage_counts, c == 'h' ? 0 : 2);
    }
    if (optind < argc || o.interval_ms < 100) help(usage_counts, 2);
    return sl_counts_run(&o);
}

static int cmd_model(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"gen", cmd_model_gen}, {"train", cmd_model_train}, {"eval", cmd_model_eval},
        {"serve", cmd_model_serve}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        help(usage_model, argc < 2 ? 2 : 0);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice model: unknown command \"%s\"\n\n", argv[1]);
    help(usage_model, 2);
    return 2;
}

int main(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"run", cmd_run}, {"check", cmd_check}, {"test", cmd_test},
        {"broker", cmd_broker}, {"replay", cmd_replay}, {"model", cmd_model},
        {"counts", cmd_counts}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help"))
        help(usage_main, argc < 2 ? 2 : 0);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command \"%s\"\n\n", argv[1]);
    help(usage_main, 2);
    return 2;
}
