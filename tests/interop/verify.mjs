// An independent verifier of cbcm checkpoints and case bundles (issue #15).
//
// Written from the specifications alone, not from cbcm's code:
//   c2sp.org/signed-note      notes, Ed25519 signatures (type 0x01), key IDs, verifier keys
//   c2sp.org/tlog-checkpoint  origin, tree size, root hash
//   c2sp.org/tlog-cosignature Ed25519 cosignatures (type 0x04), "cosignature/v1\ntime T\n"
//   RFC 9162 2.1.3.2          inclusion proof verification (RFC 6962 hashing)
//   docs/audit-bundle-format.md  the bundle's fields and the event link
//
// Usage: node verify.mjs LOG_VKEY BUNDLE.json [WITNESS_VKEY...]
// Prints one JSON object: {ok, origin, size, cosigners, proven, errors}; exit 0 if ok.

import { readFileSync } from "node:fs";
import * as ed from "@noble/ed25519";
import { sha256, sha512 } from "@noble/hashes/sha2.js";

ed.hashes.sha512 = sha512;

const enc = new TextEncoder();
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
const b64 = (s) => new Uint8Array(Buffer.from(s, "base64"));
const hex = (s) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const u32 = (b) => ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;

// signed-note: key ID = SHA-256(name || 0x0A || type || public key)[:4]
function keyId(name, type, key) {
  return u32(sha256(concat(enc.encode(name), Uint8Array.of(0x0a, type), key)));
}

// signed-note: <name>+<hex key id>+<base64(type || key)>
function parseVkey(vkey) {
  // the key name and the hex ID hold no "+"; the base64 key material may
  const first = vkey.indexOf("+");
  const second = vkey.indexOf("+", first + 1);
  const [name, id, material] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  const raw = b64(material);
  const type = raw[0];
  const key = raw.slice(1);
  if (parseInt(id, 16) !== keyId(name, type, key)) throw new Error(`vkey ${name}: wrong key id`);
  return { name, type, key, id: keyId(name, type, key) };
}

// signed-note: text ending in \n, a blank line, then "— <name> <base64(id || sig)>\n" lines
function parseNote(note) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new Error("not a signed note");
  const text = note.slice(0, split + 1);
  const signatures = note
    .slice(split + 2, -1)
    .split("\n")
    .map((line) => {
      const [dash, name, sig] = line.split(" ");
      if (dash !== "\u2014") throw new Error("bad signature line");
      const raw = b64(sig);
      return { name, id: u32(raw), blob: raw.slice(4) };
    });
  return { text, signatures };
}

// tlog-checkpoint: origin, size, base64 root, one per line
function parseCheckpoint(text) {
  const lines = text.split("\n");
  return { origin: lines[0], size: BigInt(lines[1]), root: b64(lines[2]) };
}

function verifyCheckpoint(note, log) {
  const { text, signatures } = parseNote(note);
  const checkpoint = parseCheckpoint(text);
  if (checkpoint.origin !== log.name) throw new Error("the checkpoint names another log");
  const mine = signatures.filter((s) => s.name === log.name && s.id === log.id);
  if (mine.length === 0) throw new Error("no signature of the log's key");
  for (const s of mine) {
    if (!ed.verify(s.blob, enc.encode(text), log.key)) throw new Error("log signature invalid");
  }
  return { text, checkpoint, signatures };
}

// tlog-cosignature v1 (Ed25519, type 0x04): blob = u64 timestamp || signature over
// "cosignature/v1\ntime <t>\n" || checkpoint text
function cosigners(text, signatures, witnesses) {
  const names = [];
  for (const w of witnesses) {
    for (const s of signatures) {
      if (s.name !== w.name || s.id !== w.id) continue;
      const view = new DataView(s.blob.buffer, s.blob.byteOffset, 8);
      const time = view.getBigUint64(0);
      const message = enc.encode(`cosignature/v1\ntime ${time}\n${text}`);
      if (!ed.verify(s.blob.slice(8), message, w.key)) throw new Error(`${w.name}: bad cosignature`);
      names.push(w.name);
    }
  }
  return names;
}

const node = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

// RFC 9162 2.1.3.2
function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = node(p, r);
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = node(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

// docs/audit-bundle-format.md: link = SHA-256(previous link || position (i64 BE) ||
// originator id (16 bytes) || version (i64 BE) || topic length (u32 BE) || topic || state)
function link(e) {
  const head = new DataView(new ArrayBuffer(8 + 16 + 8 + 4));
  head.setBigInt64(0, BigInt(e.position));
  new Uint8Array(head.buffer).set(hex(e.originator_id), 8);
  const topic = enc.encode(e.topic);
  head.setBigInt64(24, BigInt(e.version));
  head.setUint32(32, topic.length);
  return sha256(concat(hex(e.previous_link), new Uint8Array(head.buffer), topic, b64(e.state)));
}

function main() {
  const [logVkey, file, ...witnessVkeys] = process.argv.slice(2);
  const errors = [];
  const result = { ok: false, origin: null, size: null, cosigners: [], proven: 0, errors };
  try {
    const log = parseVkey(logVkey);
    const witnesses = witnessVkeys.map(parseVkey);
    const bundle = JSON.parse(readFileSync(file, "utf8"));
    const { text, checkpoint, signatures } = verifyCheckpoint(bundle.checkpoint, log);
    result.origin = checkpoint.origin;
    result.size = Number(checkpoint.size);
    result.cosigners = cosigners(text, signatures, witnesses);
    for (const e of bundle.events) {
      const l = link(e);
      if (toHex(l) !== e.link) {
        errors.push(`position ${e.position}: bytes do not hash to the link`);
        continue;
      }
      const leaf = sha256(concat(Uint8Array.of(0), l));
      if (e.inclusion_proof === null) {
        errors.push(`position ${e.position}: not covered`);
        continue;
      }
      const proof = e.inclusion_proof.map(b64);
      if (!verifyInclusion(BigInt(e.leaf_index), checkpoint.size, leaf, proof, checkpoint.root)) {
        errors.push(`position ${e.position}: inclusion proof fails`);
        continue;
      }
      result.proven += 1;
    }
  } catch (err) {
    errors.push(String(err.message || err));
  }
  result.ok = errors.length === 0 && result.proven > 0;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(result.ok ? 0 : 1);
}

main();
