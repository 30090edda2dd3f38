// Parse an AsyncAPI document with @asyncapi/parser (which runs the same Spectral rules as
// `asyncapi validate`) and print one JSON line: whether it built, and every diagnostic.
// Exit 0 only when the document built with no error diagnostic.
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const path = process.argv[2];
const { document, diagnostics } = await new Parser().parse(readFileSync(path, 'utf8'), {
  source: path,
});
const severity = ['error', 'warning', 'information', 'hint'];
const found = diagnostics.map((d) => ({
  severity: severity[d.severity] ?? String(d.severity),
  code: String(d.code),
  message: d.message,
  path: d.path.join('.'),
}));
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
console.log(JSON.stringify({ built: document !== undefined, errors, diagnostics: found }));
process.exit(document !== undefined && errors === 0 ? 0 : 1);
