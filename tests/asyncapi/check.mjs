// Parse AsyncAPI documents with @asyncapi/parser (which runs the same Spectral rules as
// `asyncapi validate`) and print one JSON line per document: whether it built, and every
// diagnostic. Exit 0 only when every document built with no error diagnostic.
import { readFileSync } from 'node:fs';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const parser = new Parser();
const severity = ['error', 'warning', 'information', 'hint'];
let ok = true;
for (const path of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(path, 'utf8'), {
    source: path,
  });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error).length;
  ok = ok && document !== undefined && errors === 0;
  const found = diagnostics.map((d) => ({
    severity: severity[d.severity] ?? String(d.severity),
    code: String(d.code),
    message: d.message,
    path: d.path.join('.'),
  }));
  console.log(JSON.stringify({ path, built: document !== undefined, errors, diagnostics: found }));
}
process.exit(ok ? 0 : 1);
