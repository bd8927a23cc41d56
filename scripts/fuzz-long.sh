#!/usr/bin/env bash
# The long robustness run (not part of CI): every fuzz target for a million inputs, then the
# crash-safety test with many more kills. CI runs the same targets for a few seconds each
# (tests/test_fuzz_*.py); this is the run to do before a release or after touching a parser.
#
#   scripts/fuzz-long.sh                     dhcp tftp dns api query, 1,000,000 inputs each
#   scripts/fuzz-long.sh 100000 dhcp api     fewer inputs, some targets
#   CRASH_CYCLES=0 scripts/fuzz-long.sh      skip the crash-safety part (default 200 kills)
#
# With atheris (coverage-guided libFuzzer for Python; installed into the venv here if pip can,
# a wheel exists for CPython 3.11 on x86-64) each target starts from the real inputs in
# tests/fuzz_targets.py and a crash leaves its input in $FUZZ_ARTIFACTS (default: a new
# temporary directory, printed at the start). Without atheris the
# hypothesis tests run with BOOTBOX_FUZZ_EXAMPLES raised instead. Either way, turn every
# input that failed into an entry of the fixed-input list (REGRESSIONS / KNOWN_HARD) of its
# tests/test_fuzz_*.py.
# Takes a few hours in all; TFTP (real sockets) is the slowest at ~300 inputs/s.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-1000000}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=(dhcp tftp dns api query); fi
python=.venv/bin/python
[ -x "$python" ] || { echo "fuzz-long.sh: no .venv; run scripts/test.sh once first" >&2; exit 1; }

if ! "$python" -c 'import atheris' 2>/dev/null; then
  .venv/bin/pip install -q atheris >/dev/null 2>&1 || echo "atheris could not be installed: using hypothesis"
fi
artifacts=${FUZZ_ARTIFACTS:-$(mktemp -d -t bootbox-fuzz-XXXXXX)}
mkdir -p "$artifacts"
echo "crash inputs, if any, go to $artifacts"
status=0
for target in "${targets[@]}"; do
  echo "== fuzz $target: $runs inputs"
  if "$python" -c 'import atheris' 2>/dev/null; then
    # -atheris_runs bounds the inputs; -rss_limit_mb guards against a target that leaks.
    "$python" -m tests.support.fuzz_targets "$target" -atheris_runs="$runs" -rss_limit_mb=4096 \
      -artifact_prefix="$artifacts/$target-" -print_final_stats=1 || status=1
  else
    # query strings are fuzzed by the API's test file (test_api_query_fuzz)
    BOOTBOX_FUZZ_EXAMPLES="$runs" .venv/bin/pytest -p no:cacheprovider -q "tests/scenarios/test_fuzz_${target/query/api}.py" || status=1
  fi
done

cycles=${CRASH_CYCLES:-200}
if [ "$cycles" -gt 0 ]; then
  echo "== crash safety: $cycles kills of bootbox serve"
  BOOTBOX_CRASH_CYCLES="$cycles" .venv/bin/pytest -p no:cacheprovider -q -s tests/test_crash_safety.py || status=1
fi
exit $status
