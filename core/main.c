/* main.c -- the sluice command line: parses arguments and calls the units. */
#define _GNU_SOURCE
#include "broker.h"
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
"\n"
"`sluice COMMAND --help` explains a command's options.\n";

static const char usage_run[] =
"usage: sluice run -c CONFIG [-v]\n"
"\n"
"Runs the job of CONFIG (a Lua file returning a table) on one event loop until\n"
"SIGTERM or SIGINT: stop consuming, finish records in flight (bounded by\n"
"shutdown_timeout), commit, exit 0. SIGHUP reloads the Lua rules into a fresh\n"
"VM; a reload that fails keeps the old rules and logs file:line.\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -v, --verbose       log debug lines\n"
"  -h, --help          this text\n"
"\n"
"Exit status: 0 after a clean stop, 1 on a configuration or sink error, 70 when\n"
"the watchdog stopped a rule that ran past rules.watchdog (restart the process:\n"
"the record is then dead-lettered instead of run again).\n";

static const char usage_check[] =
"usage: sluice check -c CONFIG\n"
"\n"
"Loads CONFIG and compiles every rule module it names. Prints the step count and\n"
"the rules' version and exits 0, or prints the error (file:line, or the config\n"
"key path) and exits 1.\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -h, --help          this text\n";

static const char usage_test[] =
"usage: sluice test -c CONFIG -i EVENTS.jsonl [--stub STEP=FILE]... [--summary]\n"
"\n"
"Runs each line of EVENTS.jsonl (one Kafka record value per line; - for stdin)\n"
"through the pipeline without Kafka and prints, per record and step, one JSON\n"
"line: {\"record\":N,\"step\":NAME, then \"ctx\" (the context after the step,\n"
"without input), \"filtered\" (the reason), \"dead_letter\" (the dead-letter\n"
"record with the error), \"produce\" (what a kafka step would send), or\n"
"\"request\" (what an http or model step would send: method, url, headers with\n"
"secrets redacted, body)}. HTTP steps send nothing: a stub answers them, or the\n"
"context stops after its request (\"stopped\").\n"
"\n"
"  -c, --config FILE   the job configuration\n"
"  -i, --input FILE    the records, one JSON value per line\n"
"  -S, --stub STEP=FILE  answer http/model step STEP with the canned response in\n"
"                      FILE, a JSON object {\"status\": 200, \"headers\": {...},\n"
"                      \"body\": <string or JSON>}; repeat for several steps\n"
"  -s, --summary       print no trace, only the time taken and the counts per\n"
"                      step and filter reason (Prometheus text)\n"
"  -h, --help          this text\n";

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
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *config = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else help(usage_check, c == 'h' ? 0 : 2);
    }
    if (!config || optind < argc) help(usage_check, 2);
    return sl_tester_check(config);
}

static int cmd_test(int argc, char **argv) {
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"input", required_argument, NULL, 'i'},
        {"stub", required_argument, NULL, 'S'}, {"summary", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *config = NULL, *input = NULL, *stubs[64];
    size_t nstubs = 0;
    bool summary = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:i:S:sh", opts, NULL)) != -1) {
        if (c == 'c') config = optarg;
        else if (c == 'i') input = optarg;
        else if (c == 'S' && nstubs < sizeof(stubs) / sizeof(stubs[0])) stubs[nstubs++] = optarg;
        else if (c == 's') summary = true;
        else help(usage_test, c == 'h' ? 0 : 2);
    }
    if (!config || !input || optind < argc) help(usage_test, 2);
    sl_log_set_level(SL_LOG_ERROR);
    return sl_tester_run(config, input, stdout, summary, stubs, nstubs);
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

int main(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"run", cmd_run}, {"check", cmd_check}, {"test", cmd_test},
        {"broker", cmd_broker}, {"replay", cmd_replay}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help"))
        help(usage_main, argc < 2 ? 2 : 0);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sluice: unknown command \"%s\"\n\n", argv[1]);
    help(usage_main, 2);
    return 2;
}
