# The two commands of the README:
#   make perf   installs what is missing, builds, runs the benchmark (4 local ranks, nat vs none)
#   make test   installs what is missing, builds, runs every test
BUILD ?= build
BUILD_TYPE ?= Release
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
PERF_ARGS ?= --ranks 4 -b 4K -e 64M -f 4 --codec nat,none

.PHONY: all deps configure build perf test clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

perf: build
	$(BUILD)/perf/cc_allreduce_perf $(PERF_ARGS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

clean:
	rm -rf $(BUILD)
