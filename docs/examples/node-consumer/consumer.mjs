// An agency's consumer of cbcm's NATS subjects, in Node.js (issue #19): what an integrator
// that does not use Python writes. It connects with the agency's credentials (the env file
// `cbcm nats setup` wrote for `agency-<code>`), reads
//   - its events:  durable pull consumer agency-<code> on stream CBCM_EVENTS,
//   - its shares:  durable pull consumer agency-<code> on stream CBCM_SHARES (sealed),
//   - statistics releases: cbcm.v1.stats.release.> (core NATS),
//   - audit checkpoints:   cbcm.v1.audit.checkpoint (core NATS),
// and validates each message against the published contracts: a CloudEvent by the CloudEvents
// SDK (the `cloudevents` package, strict), the body with ajv (strict mode, JSON Schema
// 2020-12, formats checked) against the schema its `dataschema` names (or, for bodies that
// are not CloudEvents, the schema of its subject), the headers against the AsyncAPI
// document's, refusing any header the document does not name.
//
// One JSON line per message on stdout; on SIGINT/SIGTERM a summary line, then exit 0.
//
// Environment:
//   CBCM_AGENCY                 the agency's code, e.g. unhcr
//   CBCM_NATS_URL               e.g. tls://nats.example.org:4222
//   CBCM_NATS_NKEY_SEED_FILE    the agency's nkey seed (a file, mode 0600)
//   CBCM_NATS_TLS_CA_FILE       the network's CA certificate
//   CBCM_NATS_INBOX_PREFIX      _INBOX.<code>
//   CBCM_NATS_JS_API_PREFIX     JS.CBCM.API
//   CBCM_CONTRACTS_DIR          docs/contracts of the cbcm release you run against
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, StringCodec } from 'nats';
import { CloudEvent } from 'cloudevents';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const SCHEMA_PREFIX = 'urn:cbcm:schema:';
const SUBJECT_SCHEMAS = [
  // bodies sent as they are, not in a CloudEvents envelope: the schema follows the subject
  [/^cbcm\.v1\.stats\.release\./, 'org.psea.cbcm.stats.release.v1'],
  [/^cbcm\.v1\.audit\.checkpoint$/, 'org.psea.cbcm.audit.checkpoint.v1'],
];

function setting(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === '') {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

const agency = setting('CBCM_AGENCY');
const contracts = setting('CBCM_CONTRACTS_DIR', new URL('../../contracts', import.meta.url).pathname);

// ------------------------------------------------------------------ the contracts
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const schemaIds = [];
for (const file of readdirSync(join(contracts, 'schemas')).sort()) {
  if (file.endsWith('.schema.json')) {
    const schema = JSON.parse(readFileSync(join(contracts, 'schemas', file), 'utf8'));
    ajv.addSchema(schema);
    schemaIds.push(schema.$id);
  }
}
// compiled now, in strict mode: a schema ajv would not take stops the consumer at start
for (const id of schemaIds) ajv.getSchema(id);
const asyncapi = JSON.parse(readFileSync(join(contracts, 'asyncapi.json'), 'utf8'));
const headerValidators = new Map(); // by the $id of the message's schema
for (const message of Object.values(asyncapi.components.messages)) {
  const schema = message.headers ?? { type: 'object', properties: {} };
  headerValidators.set(message['x-cbcm-schema-id'], {
    names: new Set(Object.keys(schema.properties ?? {})),
    validate: ajv.compile(schema),
  });
}

function schemaNameOf(subject, body) {
  for (const [pattern, name] of SUBJECT_SCHEMAS) {
    if (pattern.test(subject)) return name;
  }
  if (typeof body?.dataschema === 'string' && body.dataschema.startsWith(SCHEMA_PREFIX)) {
    return body.dataschema.slice(SCHEMA_PREFIX.length);
  }
  return undefined;
}

// ------------------------------------------------------------------ checking one message
const codec = StringCodec();
const summary = { valid: 0, invalid: 0, foreign: 0, bySchema: {} };

function foreign(subject) {
  // cbcm.v1.evt.<agency>.… and cbcm.v1.share.<agency>.… must be this agency's
  const parts = subject.split('.');
  return (parts[2] === 'evt' || parts[2] === 'share') && parts[3] !== agency;
}

function check(subject, msgHeaders, data, source) {
  const errors = [];
  let body;
  try {
    body = JSON.parse(codec.decode(data));
  } catch (e) {
    errors.push(`not JSON: ${e.message}`);
  }
  if (body?.specversion !== undefined) {
    try {
      new CloudEvent(body); // throws on an attribute the CloudEvents spec does not allow
    } catch (e) {
      errors.push(`CloudEvents: ${e.message} ${JSON.stringify(e.errors ?? [])}`);
    }
  }
  const name = schemaNameOf(subject, body);
  const validate = name && ajv.getSchema(SCHEMA_PREFIX + name);
  if (body !== undefined && !validate) errors.push(`no published schema for ${name ?? subject}`);
  if (validate && !validate(body)) {
    errors.push(...validate.errors.map((e) => `body${e.instancePath} ${e.message}`));
  }
  const headers = {};
  for (const key of msgHeaders?.keys() ?? []) headers[key] = msgHeaders.get(key);
  const documented = name && headerValidators.get(SCHEMA_PREFIX + name);
  if (documented) {
    for (const key of Object.keys(headers)) {
      if (!documented.names.has(key)) errors.push(`header ${key} is not in the AsyncAPI document`);
    }
    if (!documented.validate(headers)) {
      errors.push(...documented.validate.errors.map((e) => `headers${e.instancePath} ${e.message}`));
    }
  }
  const isForeign = foreign(subject);
  const valid = errors.length === 0;
  summary[valid ? 'valid' : 'invalid'] += 1;
  summary.foreign += isForeign ? 1 : 0;
  if (name) summary.bySchema[name] = (summary.bySchema[name] ?? 0) + 1;
  console.log(JSON.stringify({ subject, source, schema: name ?? null, valid, foreign: isForeign, errors, headers }));
}

// ------------------------------------------------------------------ the connection
const nc = await connect({
  servers: setting('CBCM_NATS_URL'),
  authenticator: nkeyAuthenticator(new TextEncoder().encode(
    readFileSync(setting('CBCM_NATS_NKEY_SEED_FILE'), 'utf8').trim(),
  )),
  tls: { caFile: setting('CBCM_NATS_TLS_CA_FILE') },
  inboxPrefix: setting('CBCM_NATS_INBOX_PREFIX', `_INBOX.${agency}`),
  name: `node-consumer-${agency}`,
});

const subscriptions = [
  nc.subscribe('cbcm.v1.stats.release.>'),
  nc.subscribe('cbcm.v1.audit.checkpoint'),
];
const readers = subscriptions.map(async (sub) => {
  for await (const m of sub) check(m.subject, m.headers, m.data, 'core');
});

const js = nc.jetstream({ apiPrefix: setting('CBCM_NATS_JS_API_PREFIX', '$JS.API') });
const streams = [];
for (const stream of ['CBCM_EVENTS', 'CBCM_SHARES']) {
  const consumer = await js.consumers.get(stream, `agency-${agency}`);
  const messages = await consumer.consume({ max_messages: 256 });
  streams.push(messages);
  readers.push((async () => {
    for await (const m of messages) {
      check(m.subject, m.headers, m.data, stream);
      m.ack(); // after it is handled: an integrator would store it first
    }
  })());
}
await nc.flush();
console.log(JSON.stringify({ ready: true, agency, schemas: schemaIds.length }));

async function stop() {
  for (const messages of streams) await messages.close();
  await nc.drain();
  await Promise.allSettled(readers);
  console.log(JSON.stringify({ summary }));
  process.exit(0);
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
