# permdnn — the two commands a newcomer needs, and the benchmarks.
#   make demo   install missing Debian packages, Release build, run the main job
#   make test   same set-up, then every test through ctest
#   make bench  kernel benchmarks (OpenBLAS at its best) and whole models next to
#               ONNX Runtime (installed into build/ort; zoo in build/zoo): see docs/benchmarks.md

BUILD_DIR ?= build/release
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
PERMDNN := $(BUILD_DIR)/src/permdnn
# OpenBLAS runs its best kernels only without these (this machine sets them to
# an older core type); unset them for benchmark commands alone.
BEST_BLAS := env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

.PHONY: all deps build demo test bench clean

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

clean:
	rm -rf build
