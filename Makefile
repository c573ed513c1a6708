# The two commands of the README:
#   make perf   installs what is missing, builds, runs the benchmark (4 local ranks, nat vs none)
#   make test   installs what is missing, builds, runs every test
BUILD ?= build
BUILD_TYPE ?= Release
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
PERF_ARGS ?= --ranks 4 -b 4K -e 64M -f 4 --codec nat,none
# The Python package is built with this environment's interpreter (Debian's
# python3 + system packages + nanobind); scripts/python-env.sh makes it.
VENV ?= $(BUILD)/venv

.PHONY: all deps python-env configure build perf test clean

all: build

deps:
	@scripts/install-deps.sh

python-env: deps
	@scripts/python-env.sh $(VENV)

configure: deps python-env
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DPython_EXECUTABLE=$(abspath $(VENV))/bin/python $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

perf: build
	$(BUILD)/perf/cc_allreduce_perf $(PERF_ARGS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

clean:
	rm -rf $(BUILD)
