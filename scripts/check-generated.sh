#!/usr/bin/env bash
# Regenerates every committed artifact and fails when any differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s prisma:generate >/dev/null
npm run -s schema:print >/dev/null
if ! git diff --exit-code --stat -- server/db/generated schema/schema.graphql; then
  echo "Generated files are stale: run 'npm run prisma:generate && npm run schema:print' and commit." >&2
  exit 1
fi
if [ -n "$(git status --porcelain -- server/db/generated schema/schema.graphql)" ]; then
  git status --porcelain -- server/db/generated schema/schema.graphql >&2
  echo "Generated files are not committed." >&2
  exit 1
fi
echo "generated files are current"
