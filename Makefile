# gplq: one Makefile for the whole tree. `make help` lists the targets.

CC      ?= gcc
OPT     ?= -O3
# OpenBLAS's OpenMP build, named explicitly: our elementwise ops use OpenMP too, and with one
# thread pool for both nothing spins against anything (the pthread build ran 2x slower here).
BLAS_DIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC := -I/usr/include/x86_64-linux-gnu/openblas-openmp
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -fno-trapping-math -g -Wall -Wextra -fopenmp -I. $(BLAS_INC) \
           -I/usr/include/postgresql -DGPLQ_SRC_DIR=\"$(CURDIR)\" $(EXTRA_CFLAGS)
LDLIBS  := -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -l:libopenblas.so.0 -ljansson -larchive -ljpeg \
           -lpng -lz -lm
# Open MPI (train/dist.c): gplq and gplq-worker always link it, and initialize it only when
# mpirun started them (dist.h); one binary runs alone or as a rank. Flags from Debian's mpicc.
MPI_INC := $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIB := $(shell mpicc --showme:link 2>/dev/null)
CFLAGS  += $(MPI_INC)
LDLIBS  += $(MPI_LIB)
# The service's libraries. gplqd links these and never OpenBLAS (ARCHITECTURE.md: a crash in
# the math cannot take the API down; the math runs in gplq-worker processes).
SVC_LIBS := -lmicrohttpd -luv -lsqlite3 -lpq -lcurl -lcrypto -ljansson -lpthread -lm
BUILD   ?= build

# The library: engine (math), io (files and data), train (optimizer and loop), gplq (the method).
# It uses config/ from the service library below, so links list libgplq.a before libgplqsvc.a.
LIB_SRC := $(wildcard engine/*.c) $(wildcard io/*.c) $(wildcard train/*.c) $(wildcard gplq/*.c) \
           $(wildcard onnx/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# onnx/ writes ONNX files through protobuf-c's code for the onnx.proto that Debian's libonnx-dev
# installs, generated at build time (never committed) so that it matches the installed
# protobuf-c. Only onnx/*.c include it; the onnx/*.h headers keep its types private.
ONNX_PROTO_DIR := /usr/include
ONNX_PROTO := $(ONNX_PROTO_DIR)/onnx/onnx.proto
ONNX_GEN   := $(BUILD)/gen/onnx/onnx.pb-c.c $(BUILD)/gen/onnx/onnx.pb-c.h
LIB_OBJ    += $(BUILD)/obj/gen/onnx/onnx.pb-c.o
CFLAGS     += -I$(BUILD)/gen
LDLIBS     += -lprotobuf-c
CLI_SRC := $(wildcard cli/*.c)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# The service's library, math-free: job options, storage (SQLite, blobs), REST handlers.
SVC_SRC := $(wildcard config/*.c) $(wildcard storage/*.c) $(wildcard api/*.c)
# util/: what every part uses (clocks, memory peaks, the JSON log line, JSON text, mkdir -p, SHA-256, UTF-8); here because
# every program and test links this library.
SVC_SRC += $(wildcard util/*.c)
SVC_OBJ := $(SVC_SRC:%.c=$(BUILD)/obj/%.o)
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o)
WORKER_SRC := $(wildcard worker/*.c)
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TESTS   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
PROGRAMS := $(BUILD)/gplq $(if $(SERVER_SRC),$(BUILD)/gplqd) $(if $(WORKER_SRC),$(BUILD)/gplq-worker)

.PHONY: all test-deps test bench san clean deps help demo stop fuzz fuzz-build fuzz-campaign chaos
all: $(PROGRAMS) $(TESTS)

help:
	@echo "make            build build/gplq and the tests"
	@echo "make test       install deps if missing, build, run every test (what CI runs)"
	@echo "make bench      speed: training and stage-1 steps against PyTorch, the service, ONNX Runtime, a DeiT-S job (installs python3-torch, wrk)"
	@echo "make san        the tests under ASan + UBSan"
	@echo "make fuzz       the libFuzzer harnesses of tests/fuzz/, FUZZ_S seconds each (default 60; installs clang)"
	@echo "make fuzz-campaign  each harness for 1 hour or 10 million executions, one per core (hours)"
	@echo "make chaos      kills and load, long (about an hour): 20 worker SIGKILLs over a job, 10 gplqd SIGKILLs over 20 jobs, 1000 clients for 30 s, 20 jobs across two cluster nodes"
	@echo "make deps       install the Debian packages (scripts/install-deps.sh)"
	@echo "make demo       install deps if missing, build, start gplqd, quantize the demo model through the API (~15 min), print the accuracy table"
	@echo "make stop       stop the gplqd that make demo started (SIGTERM, waits for it to drain)"

deps:
	bash scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# openapi.c embeds api/openapi.json with .incbin: rebuild it when the document changes.
$(BUILD)/obj/api/openapi.o: api/openapi.json
# web.c embeds the dashboard's files the same way (no build step: they are served as they are).
$(BUILD)/obj/api/web.o: web/index.html web/app.js web/style.css web/charts.js

$(ONNX_GEN) &: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	protoc-c --proto_path=$(ONNX_PROTO_DIR) --c_out=$(BUILD)/gen $(ONNX_PROTO)

$(BUILD)/obj/gen/onnx/onnx.pb-c.o: $(BUILD)/gen/onnx/onnx.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(filter $(BUILD)/obj/onnx/%,$(LIB_OBJ)): $(ONNX_GEN)

$(BUILD)/libgplq.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libgplqsvc.a: $(SVC_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/gplq: $(CLI_OBJ) $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $(CLI_OBJ) $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

# No -fopenmp and no OpenBLAS at link time: the daemon does no math.
$(BUILD)/gplqd: $(SERVER_OBJ) $(BUILD)/libgplqsvc.a
	$(CC) $(OPT) -g $(EXTRA_CFLAGS) $(SERVER_OBJ) $(BUILD)/libgplqsvc.a $(SVC_LIBS) -o $@

$(BUILD)/gplq-worker: $(WORKER_OBJ) $(BUILD)/libgplqsvc.a $(BUILD)/libgplq.a
	$(CC) $(CFLAGS) $(WORKER_OBJ) $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/tests/%: tests/%.c tests/test.h $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/bench_train: bench/bench_train.c $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/bench_stage1: bench/bench_stage1.c $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/bench_dist: bench/bench_dist.c $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/bench_gemm: bench/bench_gemm.c $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

$(BUILD)/bench_onnx: bench/bench_onnx.c $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a
	$(CC) $(CFLAGS) $< $(BUILD)/libgplq.a $(BUILD)/libgplqsvc.a $(LDLIBS) $(SVC_LIBS) -o $@

test: test-deps
	$(MAKE) -j$$(nproc) all
	bash tests/run.sh $(BUILD)

# What the tests need beyond the build: chromium (Debian's), clang for the fuzz regression
# (tests/integration/test_fuzz.py), and playwright-core from the npm registry at the version
# package-lock.json pins (no browser download: it drives chromium); onnxruntime-node likewise
# (tools/onnx: ONNX Runtime's CPU build ships inside the package; ONNXRUNTIME_NODE_INSTALL=skip
# stops its install script from fetching GPU extras).
test-deps:
	bash scripts/install-deps.sh --test --fuzz
	$(MAKE) tests/browser/node_modules/.package-lock.json tools/onnx/node_modules/.package-lock.json

tests/browser/node_modules/.package-lock.json: tests/browser/package.json tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error

tools/onnx/node_modules/.package-lock.json: tools/onnx/package.json tools/onnx/package-lock.json
	cd tools/onnx && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error

# ASan + UBSan: a separate build tree, same tests.
san: test-deps
	$(MAKE) BUILD=build/san OPT=-O1 EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all
	ASAN_OPTIONS=detect_leaks=1 bash tests/run.sh build/san

# Fuzzing (tests/fuzz/README.md): libFuzzer harnesses, built with clang under ASan + UBSan into
# a tree of their own. The library sources the harnesses need are compiled with
# -fsanitize=fuzzer-no-link (coverage for the fuzzer, no main) and without OpenMP: a fuzzing
# process runs one input at a time on one thread, and the parsers have no parallel loops. Each
# harness links what it uses from one archive; OpenBLAS comes in as a shared library.
FUZZ_CC    ?= clang
FUZZ_S     ?= 60
FUZZ_BUILD ?= build/fuzz
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer -Wall -Wextra \
              -Wno-unknown-pragmas -Wno-target-clones-mixed-specifiers -I. $(BLAS_INC) \
              -I/usr/include/postgresql -DGPLQ_SRC_DIR=\"$(CURDIR)\" -fsanitize=address,undefined \
              -fno-sanitize-recover=undefined
# io/checkpoint.c loads either architecture: the engine's model, ViT and Swin come along
FUZZ_SRC   := $(wildcard io/*.c) engine/model.c engine/vit.c engine/swin.c engine/swin_ops.c \
              engine/ops.c engine/gemm_bf16.c $(wildcard config/*.c) \
              $(wildcard storage/*.c) $(wildcard api/*.c) $(wildcard util/*.c) tests/fuzz/fixture.c
FUZZ_OBJ   := $(FUZZ_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))

$(FUZZ_BUILD)/obj/%.o: %.c $(wildcard */*.h) $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/obj/api/openapi.o: api/openapi.json
$(FUZZ_BUILD)/obj/api/web.o: web/index.html web/app.js web/style.css web/charts.js

$(FUZZ_BUILD)/libgplqfuzz.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_BUILD)/libgplqfuzz.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $< $(FUZZ_BUILD)/libgplqfuzz.a $(LDLIBS) $(SVC_LIBS) -o $@

fuzz-build: $(FUZZ_BINS)

# Each harness for FUZZ_S seconds on a scratch copy of its committed corpus; fails on a crash.
fuzz:
	bash scripts/install-deps.sh --fuzz
	$(MAKE) -j$$(nproc) fuzz-build
	bash tests/fuzz/run.sh -s $(FUZZ_S) -b $(FUZZ_BUILD)

# The long campaign: each harness for an hour or ten million executions, as many at once as
# there are cores; the same replay first, the same crash handling.
fuzz-campaign:
	bash scripts/install-deps.sh --fuzz
	$(MAKE) -j$$(nproc) fuzz-build
	bash tests/fuzz/run.sh -s 3600 -r 10000000 -j $$(nproc) -b $(FUZZ_BUILD)

# tests/integration/test_chaos.py at full length (make test runs its short variant): 20 worker
# SIGKILLs over one default job, 10 gplqd SIGKILLs over 20 jobs, 1000 keep-alive clients for
# 30 s. It prints its seed; GPLQ_CHAOS_SEED=N replays the same kill moments. Then
# tests/integration/test_cluster.py with twenty jobs racing across its two nodes (six in CI).
chaos: test-deps
	$(MAKE) -j$$(nproc) all
	GPLQ_CHAOS=long GPLQ_BUILD=$(BUILD) /usr/bin/python3 tests/integration/test_chaos.py
	GPLQ_CLUSTER_JOBS=20 GPLQ_BUILD=$(BUILD) /usr/bin/python3 tests/integration/test_cluster.py

# The main job on embedded defaults, through the service: gplqd (started, or reused) quantizes
# the committed demo model on Fashion-MNIST; scripts/demo.sh says what it does and its options.
demo: deps
	$(MAKE) -j$$(nproc) all
	bash scripts/demo.sh $(BUILD)

# The gplqd that make demo left running (GPLQ_DEMO_DATA names its data dir, default var).
stop:
	bash scripts/demo.sh --stop

bench: all $(BUILD)/bench_train $(BUILD)/bench_stage1 $(BUILD)/bench_dist $(BUILD)/bench_onnx \
       $(BUILD)/bench_gemm
	bash scripts/install-deps.sh --bench
	$(MAKE) tools/onnx/node_modules/.package-lock.json
	bash bench/run.sh $(BUILD)
	$(BUILD)/bench_gemm --json --threads 2 >$(BUILD)/bench/gemm_bf16.jsonl
	bash bench/dist.sh $(BUILD)
	/usr/bin/python3 bench/service.py $(BUILD)
	/usr/bin/python3 bench/onnx.py $(BUILD)
	/usr/bin/python3 bench/job.py $(BUILD)

clean:
	rm -rf $(BUILD)
