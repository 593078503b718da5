#!/usr/bin/env bash
# Here (no GPU needed): builds the test suites in release mode and packs the test runner with the Swift runtime
# libraries it loads into bin/gpu-tests.tar.xz, so the GPU suites can run on a GPU machine without Swift
# (scripts/gpu_tests.sh there). The C library, libstdc++, libgcc and zlib are the GPU machine's own.
set -eu
swift build -c release --build-tests -Xswiftc -enable-testing
runner=$(swift build -c release --show-bin-path)/DistFlashAttnPackageTests.xctest
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$runner" "$stage/"
strip "$stage/$(basename "$runner")"
ldd "$runner" | awk '/=>/ { print $3 }' | grep -v -E '/lib(c|m|stdc\+\+|gcc_s|z)\.so' | xargs -I{} cp -L {} "$stage/"
mkdir -p bin
tar -C "$stage" -cJf bin/gpu-tests.tar.xz .
ls -la bin/gpu-tests.tar.xz
