#!/usr/bin/env bash
# run-fuzzers.sh: runs each libFuzzer target for FUZZ_SECONDS (default 60) on a copy of
# its seed corpus, leaks detected, and fails if any target finds a crash, a leak, a
# sanitizer report or a hang. "make fuzz" calls it after ./configure CC=clang
# --enable-fuzzing.
#
#   run-fuzzers.sh CORPUS_DIR TARGET...
#
# CORPUS_DIR/NAME holds the seed inputs of target NAME (tests/fuzz/corpus); new inputs
# the run finds are thrown away with the copy. A failing input is kept as
# FUZZ_ARTIFACTS/NAME-crash-<sha1> (default: fuzz-artifacts in the current directory):
# add it to the seed corpus once fixed, so it is replayed on every run.
set -u

seconds=${FUZZ_SECONDS:-60}
artifacts=${FUZZ_ARTIFACTS:-fuzz-artifacts}

if [ $# -lt 2 ]; then
	echo "usage: $0 CORPUS_DIR TARGET..." >&2
	exit 2
fi
corpus_root=$1
shift

mkdir -p "$artifacts" || exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/run-fuzzers.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# Leaks count as failures; UBSan reports stop the run (the build also makes them fatal).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
# Leaks inside system libraries we cannot fix (each one explained in the file).
supp=${FUZZ_LSAN_SUPP:-$corpus_root/../lsan.supp}
if [ -f "$supp" ]; then
	export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$supp")" && pwd)/$(basename "$supp"):print_suppressions=0:${LSAN_OPTIONS:-}"
fi

failed=""
for target in "$@"; do
	name=$(basename "$target")
	seeds=$corpus_root/$name
	corpus=$work/$name
	log=$work/$name.log
	mkdir -p "$corpus"
	if [ -d "$seeds" ]; then
		cp "$seeds"/* "$corpus"/ 2>/dev/null
	fi
	echo "fuzz: $name for ${seconds}s ($(ls "$corpus" | wc -l) seed inputs)"
	# -timeout: one input running longer than 10 s is a hang; -rss_limit_mb bounds memory.
	"$target" -max_total_time="$seconds" -detect_leaks=1 -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "$corpus" >"$log" 2>&1
	rc=$?
	if [ $rc -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
		echo "FAIL: $name (exit $rc)"
		tail -n 60 "$log"
		failed="$failed $name"
	else
		grep -E '^stat::number_of_executed_units|^stat::new_units_added' "$log" |
		    tr '\n' ' ' | sed "s/^/  $name: /; s/\$/\n/"
	fi
done

if [ -n "$failed" ]; then
	echo "fuzz: failed:$failed (inputs in $artifacts/)"
	exit 1
fi
echo "fuzz: all $# targets ran ${seconds}s without a finding"
