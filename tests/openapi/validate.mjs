// validate.mjs - every response the end-to-end tests received, checked
// against docs/openapi.json (tests/test_openapi.sh runs it after them).
//
//   node validate.mjs OPENAPI.json RESPONSES.jsonl
//
// RESPONSES.jsonl is what tests/api_client.c wrote with
// IMAGEJOBS_RESPONSE_LOG set: one {"method", "path", "status",
// "content_type", "body"} per response (body: the JSON, or null). For each,
// the operation is found by path template and method, then the response by
// status; its media type must be the documented one and a JSON body must
// validate against the schema (every object is additionalProperties:
// false, so a field the server adds without the document fails here, and
// one the document requires that the server lost fails too). An
// undocumented path, method or status fails. Exit status 1 on any failure.
import { readFileSync } from 'node:fs';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const [docPath, logPath] = process.argv.slice(2);
if (!docPath || !logPath) {
  console.error('usage: node validate.mjs OPENAPI.json RESPONSES.jsonl');
  process.exit(2);
}
const doc = JSON.parse(readFileSync(docPath, 'utf8'));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(doc, 'openapi.json');

const deref = (o) => {
  while (o && o.$ref && o.$ref.startsWith('#/')) {
    o = o.$ref.slice(2).split('/').reduce((v, k) => v[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
  }
  return o;
};
const pointer = (...parts) =>
  'openapi.json#/' + parts.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

// Path templates, most literal first (/api/jobs/cancel before /api/jobs/{jobId}).
const templates = Object.keys(doc.paths)
  .map((t) => ({
    t,
    re: new RegExp('^' + t.replace(/\{[^}]+\}/g, '[^/]+') + '$'),
    literal: t.replace(/\{[^}]+\}/g, '').length,
  }))
  .sort((a, b) => b.literal - a.literal);

const validators = new Map();
const validator = (ptr) => {
  if (!validators.has(ptr)) validators.set(ptr, ajv.getSchema(ptr) || ajv.compile({ $ref: ptr }));
  return validators.get(ptr);
};

const lines = readFileSync(logPath, 'utf8').split('\n').filter((l) => l.trim());
const failures = new Map(); // one example per kind of failure
const seen = new Set();
let checked = 0;
const fail = (key, detail) => {
  if (!failures.has(key)) failures.set(key, { detail, count: 0 });
  failures.get(key).count++;
};

for (const line of lines) {
  let r;
  try {
    r = JSON.parse(line);
  } catch {
    fail('a line of the log is not JSON', line.slice(0, 200));
    continue;
  }
  const path = r.path.split('?')[0];
  const method = r.method.toLowerCase();
  const tpl = templates.find((x) => x.re.test(path));
  if (!tpl) {
    // an unknown path: the server's 404 (or its refusals of what it cannot read)
    if ([400, 404, 413, 431].includes(r.status) && r.body && typeof r.body.error === 'string') {
      checked++;
      continue;
    }
    fail(`undocumented path ${path} (${r.status})`, line.slice(0, 300));
    continue;
  }
  const item = doc.paths[tpl.t];
  if (method === 'options') {
    if (r.status !== 204) fail(`OPTIONS ${tpl.t} answered ${r.status}`, line.slice(0, 300));
    checked++;
    continue;
  }
  const op = item[method === 'head' ? 'get' : method];
  let resp;
  if (!op) {
    resp = r.status === 405 ? deref({ $ref: '#/components/responses/MethodNotAllowed' }) : null;
    if (!resp) {
      fail(`undocumented operation ${method.toUpperCase()} ${tpl.t} (${r.status})`, line.slice(0, 300));
      continue;
    }
  } else {
    seen.add(`${method === 'head' ? 'get' : method} ${tpl.t}`);
    resp = deref(op.responses[String(r.status)] || op.responses.default);
    if (!resp) {
      fail(`${method.toUpperCase()} ${tpl.t}: undocumented status ${r.status}`, line.slice(0, 300));
      continue;
    }
  }
  checked++;
  if (!resp.content || method === 'head' || r.status === 204 || r.status === 304) continue;
  const ctype = (r.content_type || '').split(';')[0].trim();
  if (!resp.content[ctype]) {
    fail(`${method.toUpperCase()} ${tpl.t} ${r.status}: media type ${ctype} not documented`, line.slice(0, 300));
    continue;
  }
  if (ctype !== 'application/json') continue;
  const schema = resp.content[ctype].schema;
  if (!schema) continue;
  let ptr;
  if (!op) ptr = pointer('components', 'responses', 'MethodNotAllowed', 'content', ctype, 'schema');
  else if (op.responses[String(r.status)]?.$ref)
    ptr = pointer(...op.responses[String(r.status)].$ref.slice(2).split('/').map((k) => k.replace(/~1/g, '/')), 'content', ctype, 'schema');
  else
    ptr = pointer('paths', tpl.t, method === 'head' ? 'get' : method, 'responses', op.responses[String(r.status)] ? String(r.status) : 'default', 'content', ctype, 'schema');
  const v = validator(ptr);
  if (!v(r.body)) {
    const errs = v.errors.slice(0, 4).map((e) => `${e.instancePath || '/'} ${e.message}${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`);
    fail(`${method.toUpperCase()} ${tpl.t} ${r.status}: ${errs.join('; ')}`, JSON.stringify(r.body).slice(0, 400));
  }
}

const ops = [];
for (const [t, item] of Object.entries(doc.paths))
  for (const m of ['get', 'post', 'put', 'delete', 'patch']) if (item[m]) ops.push(`${m} ${t}`);
const unseen = ops.filter((o) => !seen.has(o));
console.log(`validate.mjs: ${checked} of ${lines.length} responses checked against ${docPath}; ` +
  `${ops.length - unseen.length} of ${ops.length} operations exercised` +
  (unseen.length ? ` (not by these tests: ${unseen.join(', ')})` : ''));
if (failures.size) {
  for (const [key, { detail, count }] of failures) console.log(`FAIL (${count}x) ${key}\n    e.g. ${detail}`);
  process.exit(1);
}
