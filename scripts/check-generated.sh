#!/usr/bin/env bash
# Regenerates every committed artifact and fails when any differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
GENERATED=(server/db/generated schema/schema.graphql sdk/gql observability/grafana/fleet.json observability/grafana/product.json)
npm run -s prisma:generate >/dev/null
npm run -s schema:print >/dev/null
# The SDK's typed documents from the freshly printed schema (fails on operations the schema no longer accepts).
npm run -s codegen >/dev/null
# The Grafana dashboards from their TypeScript (observability/grafana/dashboards.ts).
npm run -s dashboards
if ! git diff --exit-code --stat -- "${GENERATED[@]}"; then
  echo "Generated files are stale: run 'npm run prisma:generate && npm run schema:print && npm run codegen && npm run dashboards' and commit." >&2
  exit 1
fi
if [ -n "$(git status --porcelain -- "${GENERATED[@]}")" ]; then
  git status --porcelain -- "${GENERATED[@]}" >&2
  echo "Generated files are not committed." >&2
  exit 1
fi
echo "generated files are current"
