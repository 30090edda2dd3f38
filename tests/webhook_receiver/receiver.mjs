// A webhook receiver as an agency would write it (issue #19): Node's own http server and the
// `standardwebhooks` package from the npm registry verify every delivery; nothing of cbcm's.
//
// Usage: node receiver.mjs PORT LOG_FILE ROUTES_JSON
//   ROUTES_JSON: {"/path": "whsec_...", ...}: the secret each path verifies with.
// Prints "listening <port>" once ready (PORT 0: a free port). Every POST is one JSON line in
// LOG_FILE: {path, ok, error, webhook_id, webhook_timestamp, content_type, ce: {...}}.
// A verified delivery is answered 204; one that fails verification 401.

import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Webhook } = require("standardwebhooks");

const [port, logFile, routesJson] = process.argv.slice(2);
const routes = JSON.parse(routesJson);

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const path = new URL(req.url, "http://receiver").pathname;
    const line = {
      path,
      ok: false,
      error: null,
      webhook_id: req.headers["webhook-id"] ?? null,
      webhook_timestamp: req.headers["webhook-timestamp"] ?? null,
      content_type: req.headers["content-type"] ?? null,
      ce: null,
    };
    const secret = routes[path];
    try {
      if (req.method !== "POST") throw new Error(`method ${req.method}`);
      if (!secret) throw new Error("no such route");
      const event = new Webhook(secret).verify(body, req.headers);
      line.ok = true;
      line.ce = {
        id: event.id,
        type: event.type,
        subject: event.subject,
        source: event.source,
        specversion: event.specversion,
        position: event.position ?? null,
      };
    } catch (e) {
      line.error = String(e.message ?? e);
    }
    appendFileSync(logFile, JSON.stringify(line) + "\n");
    res.writeHead(line.ok ? 204 : 401);
    res.end();
  });
});

server.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
