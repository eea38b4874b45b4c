#!/usr/bin/env bash
# Runs every Go fuzz target in the repository (each `func FuzzXxx` in a
# *_test.go file) for DURATION, one after another, so targets added to any
# package are picked up without editing this script. Keeps going after a
# failure and exits 1 if any target failed; failing inputs are saved under
# the package's testdata/fuzz/ by `go test`.
#
#   scripts/fuzz.sh 60s           (what `make fuzz` runs)
#   FUZZFLAGS='-fuzzminimizetime 30s' scripts/fuzz.sh 5m
#
# FUZZFLAGS defaults to -fuzzminimizetime 5s: go test otherwise spends up to
# 60 s minimizing each new input, which for a target whose one execution
# takes milliseconds (the CUE config loader) eats a whole 60 s run.
set -euo pipefail
dur=${1:?usage: scripts/fuzz.sh DURATION (e.g. 60s)}
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

mapfile -t targets < <(
	grep -rHoE --include='*_test.go' --exclude-dir=.git --exclude-dir=.cache \
		--exclude-dir=out --exclude-dir=testdata '^func Fuzz[A-Za-z0-9_]*\(' . |
		sed -E 's/:func (Fuzz[A-Za-z0-9_]*)\($/ \1/' | sort
)
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=()
for t in "${targets[@]}"; do
	file=${t% *}
	name=${t#* }
	pkg=$(dirname "$file")
	echo "== $name in $pkg for $dur"
	# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$dur" ${FUZZFLAGS:--fuzzminimizetime 5s} "$pkg"; then
		failed+=("$name ($pkg)")
	fi
done

if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz.sh: failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran for $dur without a failure"
