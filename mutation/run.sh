#!/usr/bin/env bash
# Mutation testing (cosmic-ray) of the code that decides correctness; see mutation/README.md.
#   mutation/run.sh                   every target, every mutant
#   mutation/run.sh decisions domain  some of them (decisions, domain, verifier, operator)
#   mutation/run.sh --ci [target ...] each target's [ci] sample of its mutants (all when it has none), drawn
#                                     anew for each commit
# Fails when a mutant survives that its target's toml does not explain. cosmic-ray rewrites the module on disk
# for each mutant, so each target runs in its own throwaway copy of the tracked files (with their uncommitted
# changes) and virtualenv: the checkout and other runs are untouched. Two targets at a time (2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
COSMIC_RAY="cosmic-ray==8.7.0"
ci=false
[ "${1:-}" != --ci ] || { ci=true; shift; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decisions domain verifier operator)
for target in "${targets[@]}"; do
  [ -f "mutation/$target.toml" ] || { echo "unknown target $target" >&2; exit 2; }
done
seed=$(git rev-parse HEAD)
base=$(mktemp -d "${TMPDIR:-/tmp}/fincart-mutation-XXXXXX")

mutate() {
  local target=$1 work="$base/$1" server
  mkdir "$work"
  git ls-files -z | xargs -0 tar cf - | tar xf - -C "$work"
  cd "$work"
  uv sync --frozen -q
  cr() { uv run -q --with "$COSMIC_RAY" "$@"; }
  cr cosmic-ray init "mutation/$target.toml" session.sqlite
  cr cr-filter-operators session.sqlite mutation/filters.toml
  ! $ci || .venv/bin/python mutation/session.py sample "mutation/$target.toml" session.sqlite "$seed"
  # the tests run in processes forked from one that has imported the libraries once (mutation/forkserver.py)
  .venv/bin/python mutation/forkserver.py serve "mutation/$target.toml" &
  server=$!
  trap "kill $server 2>/dev/null; rm -rf .venv" EXIT  # the session stays, not its virtualenv
  for _ in $(seq 600); do [ -S mutation/.forkserver.sock ] && break; kill -0 $server; sleep 0.5; done
  cr cosmic-ray exec "mutation/$target.toml" session.sqlite
  .venv/bin/python mutation/session.py report "mutation/$target.toml" session.sqlite
}

pids=()
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
  echo "== $target started $(date +%T)"
  (mutate "$target") >"$base/$target.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  wait "${pids[$i]}" || status=1
  echo "== ${targets[$i]} ($(date +%T))"
  cat "$base/${targets[$i]}.log"
done
echo "sessions kept in $base/<target>/session.sqlite (cr-report, cr-html)"
exit $status
