// The GraphQL-over-HTTP audit of the graphql-http package against a running server.
// Usage: NODE_PATH=tests/.node/node_modules node tests/graphql_http_audit.js URL
// Prints one JSON line: {"ok": n, "warn": n, "error": n, "notOk": [{id, status, name, reason}]}.
'use strict';

const { auditServer } = require('graphql-http');

async function main() {
  const url = process.argv[2];
  const results = await auditServer({ url });
  const summary = { ok: 0, warn: 0, error: 0, notOk: [] };
  for (const result of results) {
    summary[result.status] += 1;
    if (result.status !== 'ok') {
      summary.notOk.push({
        id: result.id,
        status: result.status,
        name: result.name,
        reason: result.reason,
      });
    }
  }
  process.stdout.write(JSON.stringify(summary) + '\n');
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error) + '\n');
  process.exit(1);
});
