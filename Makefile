# A thin front for CMake.  The two commands a newcomer needs:
#   make run    install, build, start kiban with the quickstart example
#   make test   install, build (plain and ASan+UBSan), run the whole suite
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build asan run test unit bench bench-gateway bench-runtime fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DKB_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	@scripts/quickstart.sh $(BUILD)

# The whole suite twice: on the plain build, then under ASan+UBSan.
test: build asan
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    ctest --output-on-failure -j $(JOBS)

bench: bench-gateway bench-runtime

bench-gateway: build
	@scripts/deps.sh bench
	@bench/gateway.sh $(BUILD)

bench-runtime: build
	@scripts/deps.sh bench
	@bench/runtime.sh $(BUILD)

fuzz:
	@scripts/deps.sh fuzz
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DKB_FUZZ=ON -DKB_SANITIZE=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@echo "fuzzers in $(FUZZ_BUILD)/: run e.g. mkdir -p /tmp/corpus && $(FUZZ_BUILD)/fuzz_http_request /tmp/corpus fuzz/corpus/http_request"
	@echo "(the first directory receives new inputs; keep fuzz/corpus/ to the curated seeds)"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
