# sluice -- build, test, bench. `make test` and `make run` install missing
# Debian packages themselves (scripts/deps.sh).

CC      ?= gcc

# On a fresh machine, install what is missing before pkg-config is asked.
ifeq ($(filter clean,$(MAKECMDGOALS)),)
ifneq ($(shell pkg-config --exists luajit rdkafka libevent libcurl openssl hiredis 2>/dev/null && command -v redis-server >/dev/null && command -v busted >/dev/null && command -v kcat >/dev/null && echo ok),ok)
$(info scripts/deps.sh: installing missing Debian packages)
DEPS_STATUS := $(shell ./scripts/deps.sh >&2; echo $$?)
ifneq ($(DEPS_STATUS),0)
$(error scripts/deps.sh failed (status $(DEPS_STATUS)): install the packages it names by hand or run it as root)
endif
endif
endif
PKGS    := luajit rdkafka libevent libevent_pthreads libcurl hiredis
CFLAGS  ?= -O3 -g
# Truncated error messages are acceptable; truncation warnings are not errors.
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wstrict-prototypes -Wno-format-truncation -MMD -MP \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
override LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
BUILD   ?= build

CORE_SRCS := $(filter-out core/main.c,$(wildcard core/*.c))
CORE_OBJS := $(patsubst core/%.c,$(BUILD)/obj/%.o,$(CORE_SRCS))
TEST_SRCS := $(wildcard core/tests/*_test.c)
TEST_BINS := $(patsubst core/tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
BENCH_SRCS := $(wildcard core/bench/*_bench.c)
BENCH_BINS := $(patsubst core/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))
# The programs `make bench` compares sluice with and drives it by (bench/).
BENCH_TOOLS := $(BUILD)/bench/consume $(BUILD)/bench/produce

DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all deps test unit spec e2e integration asan sluice-asan lint bench run demo fuzz soak clean

all: sluice

# Installs what is missing when a header or tool is not there.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/deps.sh
	@./scripts/deps.sh
	@mkdir -p $(BUILD) && touch $@

$(BUILD)/obj/%.o: core/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libsluice.a: $(CORE_OBJS)
	ar rcs $@ $^

sluice: $(BUILD)/obj/main.o $(BUILD)/libsluice.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: core/tests/%.c $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icore $(LDFLAGS) -o $@ $< $(BUILD)/libsluice.a $(LDLIBS)

# The HTTP client's test also serves TLS (a certificate made at run time).
$(BUILD)/tests/httpc_test: override LDLIBS += $(shell pkg-config --libs libevent_openssl openssl 2>/dev/null)

$(BUILD)/bench/%: core/bench/%.c $(BUILD)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icore $(LDFLAGS) -o $@ $< $(BUILD)/libsluice.a $(LDLIBS)

$(BUILD)/bench/consume $(BUILD)/bench/produce: $(BUILD)/bench/%: bench/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(shell pkg-config --libs rdkafka 2>/dev/null)

# Every C test, busted spec and integration spec; ends with "N passed, N failed".
test: sluice $(TEST_BINS)
	@./scripts/test.sh all

unit: $(TEST_BINS)
	@./scripts/test.sh unit

spec: | $(DEPS_STAMP)
	@./scripts/test.sh spec

integration: sluice
	@./scripts/test.sh integration

# Headless chromium: the storefront widget, then the demo end to end.
e2e: sluice
	@./scripts/test.sh e2e

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	    LDFLAGS="-fsanitize=address,undefined" sluice-asan
sluice-asan: $(BUILD)/obj/main.o $(BUILD)/libsluice.a $(TEST_BINS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $(BUILD)/sluice $(BUILD)/obj/main.o $(BUILD)/libsluice.a $(LDLIBS)
	SLUICE_BIN=$(abspath $(BUILD)/sluice) SLUICE_TEST_BUILD=$(BUILD) \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 SLUICE_TEST_ASAN=1 \
	    ./scripts/test.sh all

lint: | $(DEPS_STAMP)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
	    --suppress=missingIncludeSystem core
	luacheck lua spec config bench

# Steady load with SIGHUPs, worker kill -9s and a broker down on three real Kafka
# brokers, then malformed payloads at rate; lost must be 0 (not in `make test`).
soak: sluice
	scripts/soak.sh

# libFuzzer on the collector's and the admin listener's request parsing and on the JSON
# codec (decoder, tape, scanner and lazy records against each other), FUZZ_SECONDS each (not in CI).
FUZZ_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -Werror -Wstrict-prototypes \
               -fsanitize=fuzzer,address,undefined -Icore $(shell pkg-config --cflags luajit 2>/dev/null)
$(BUILD)/fuzz/collector_fuzz: core/fuzz/collector_fuzz.c core/collector.c core/httpd.c core/json.c core/lazy.c core/kafka.c core/metrics.c core/sl.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(shell pkg-config --libs rdkafka libevent luajit) -lpthread -lm
$(BUILD)/fuzz/admin_fuzz: core/fuzz/admin_fuzz.c core/httpd.c core/sl.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(shell pkg-config --libs libevent) -lpthread
$(BUILD)/fuzz/json_fuzz: core/fuzz/json_fuzz.c core/json.c core/lazy.c core/sl.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $^ $(shell pkg-config --libs luajit) -lpthread -lm
fuzz: $(BUILD)/fuzz/collector_fuzz $(BUILD)/fuzz/admin_fuzz $(BUILD)/fuzz/json_fuzz
	@mkdir -p $(BUILD)/fuzz/corpus-collector $(BUILD)/fuzz/corpus-admin $(BUILD)/fuzz/corpus-json
	@for f in spec/fixtures/snowplow/*.json spec/fixtures/snowplow/*.raw; do \
	  [ -f "$$f" ] && (printf '\1'; cat "$$f") > $(BUILD)/fuzz/corpus-json/$$(basename "$$f"); done; true
	@(printf '\0'; cat spec/fixtures/snowplow/tp2-post-product.body.raw) > $(BUILD)/fuzz/corpus-collector/post
	@(printf '\1'; cat spec/fixtures/snowplow/get-i-product.querystring.txt) > $(BUILD)/fuzz/corpus-collector/get
	@printf '\3GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n' > $(BUILD)/fuzz/corpus-admin/get
	@printf '\0POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n' > $(BUILD)/fuzz/corpus-admin/post
	$(BUILD)/fuzz/collector_fuzz -max_total_time=$${FUZZ_SECONDS:-60} -max_len=4096 $(BUILD)/fuzz/corpus-collector
	$(BUILD)/fuzz/admin_fuzz -max_total_time=$${FUZZ_SECONDS:-60} -max_len=20000 $(BUILD)/fuzz/corpus-admin
	$(BUILD)/fuzz/json_fuzz -max_total_time=$${FUZZ_SECONDS:-60} -max_len=8192 $(BUILD)/fuzz/corpus-json

# Speed and memory (scripts/bench.sh), a few minutes on 2 cores; BENCH_QUICK=1 for a
# short run. Compares sluice with a C consumer and a plain Python job, on the embedded
# broker and real Kafka (scripts/bench-compare.sh; python3-confluent-kafka from deps.sh).
bench: sluice $(BENCH_BINS) $(BENCH_TOOLS)
	@./scripts/deps.sh bench
	@./scripts/bench.sh

# The job on embedded defaults; with no MODEL_URL it uses the built-in model,
# trained first when its file (MODEL_FILE, default .cache/demo/recs.model) is missing.
run: sluice
	@[ -n "$${MODEL_URL:-}" ] || ./scripts/demo.sh model
	./sluice run -c config/recommendations.lua

# The whole loop on one machine: the job on embedded defaults with the built-in
# model, and the demo storefront; prints the URL to open. Ctrl-C stops it all.
demo: sluice
	@./scripts/demo.sh

clean:
	rm -rf build build-asan sluice

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d $(BUILD)/bench/*.d)
