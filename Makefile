# permdnn — the two commands a newcomer needs, and the benchmarks.
#   make demo   install missing Debian packages, Release build, run the main job
#   make test   same set-up, then every test through ctest
#   make bench  kernel benchmarks (OpenBLAS at its best) and whole models next to
#               ONNX Runtime (installed into build/ort; zoo in build/zoo): see docs/benchmarks.md
#   make test-asan  the tests under AddressSanitizer + UBSan (g++; docs/reliability.md)
#   make fuzz   build the libFuzzer targets (clang) and run each FUZZ_SECONDS

BUILD_DIR ?= build/release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PERMDNN := $(BUILD_DIR)/src/permdnn
# OpenBLAS runs its best kernels only without these (this machine sets them to
# an older core type); unset them for benchmark commands alone.
BEST_BLAS := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

ASAN_DIR := build/asan
FUZZ_DIR := build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 2
FUZZ_TARGETS ?=
# LeakSanitizer stays on; OpenBLAS/LibTorch thread pools outlive main.
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan.supp:print_suppressions=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: all deps build demo test bench clean test-asan fuzz fuzz-build

all: build

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/CMakeCache.txt
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(BEST_BLAS) $(PERMDNN) demo

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	BUILD_DIR=$(BUILD_DIR) scripts/update-benchmarks.sh
	BUILD_DIR=$(BUILD_DIR) scripts/update-runtime-benchmarks.sh
	$(BEST_BLAS) $(BUILD_DIR)/bench/permdnn_kernels_bench --benchmark_repetitions=5 \
	    --benchmark_report_aggregates_only=true

test-asan: deps
	@PERMDNN_DEPS=sanitize scripts/install-deps.sh
	cmake --preset asan $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && $(ASAN_ENV) ctest --output-on-failure -j $(JOBS)

fuzz-build:
	@PERMDNN_DEPS=fuzz scripts/install-deps.sh
	cmake --preset fuzz $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) --target permdnn_fuzzers -j $(JOBS)

fuzz: fuzz-build
	FUZZ_DIR=$(FUZZ_DIR) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	rm -rf build
