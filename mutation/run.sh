#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the code that decides correctness; see chaos/README.md.
#   mutation/run.sh                  every target
#   mutation/run.sh decisions domain some of them (decisions, domain, verifier, operator)
# cosmic-ray rewrites the module on disk for each mutant, so it works on a throwaway copy of the tracked
# files (with their uncommitted changes) in its own virtualenv: the checkout and other runs are untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
COSMIC_RAY="cosmic-ray==8.7.0"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decisions domain verifier operator)
work=$(mktemp -d "${TMPDIR:-/tmp}/fincart-mutation-XXXXXX")
git ls-files -z | xargs -0 tar cf - | tar xf - -C "$work"
cd "$work"
uv sync --frozen -q
cr() { uv run -q --with "$COSMIC_RAY" "$@"; }
for target in "${targets[@]}"; do
  [ -f "mutation/$target.toml" ] || { echo "unknown target $target" >&2; exit 2; }
  echo "== $target ($(date +%T))"
  cr cosmic-ray init "mutation/$target.toml" "$target.sqlite"
  cr cr-filter-operators "$target.sqlite" "mutation/$target.toml"
  cr cosmic-ray exec "mutation/$target.toml" "$target.sqlite"
  cr cr-report --show-output "$target.sqlite" | grep -E "SURVIVED|^(total jobs|complete|surviving mutants)" -A12 || true
done
echo "sessions kept in $work (cr-report, cr-html on *.sqlite)"
