#!/usr/bin/env node
// Enforces ferry's one-way package dependencies (docs/architecture.md): which @ferry packages and
// which heavy libraries each package may import, no deep imports into a sibling's src/, no cycles
// between packages, and no cycles among a package's own files. A file's imports are all of them:
// static, type-only (`import type`), re-exports and dynamic `import()`: a type-only import is still
// a dependency to read and to compile, and a dynamic one still loads the file.
import { readdirSync, readFileSync, statSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const ALLOWED = {
  common: { ferry: [], forbid: [/./] },
  protocol: { ferry: [], forbid: [/^@tensorflow\//], skip: /\/gen\// },
  events: { ferry: ['common', 'protocol'], forbid: [/^@tensorflow\//, /^@grpc\//] },
  // torch: the native backend (C++ over ATen, a TensorFlow.js backend); no network, no other engine code.
  torch: { ferry: ['common'], forbid: [/^@grpc\//, /^@nats-io\//, /^fastify/, /^@tensorflow\/tfjs-backend/] },
  core: { ferry: ['common', 'protocol', 'torch'], forbid: [/^@grpc\//, /^@nats-io\//, /^fastify/] },
  client: { ferry: ['common', 'protocol'], forbid: [/^@tensorflow\//, /^webgpu$/, /^@nats-io\//, /^fastify/] },
  coordinator: {
    ferry: ['common', 'protocol', 'events', 'client'],
    forbid: [/^@tensorflow\//, /^webgpu$/, /^@nats-io\//],
  },
  worker: { ferry: ['common', 'protocol', 'events', 'client', 'core'], forbid: [/^@nats-io\//] },
  dashboard: { ferry: ['common', 'protocol', 'events'], forbid: [/^@tensorflow\//, /^webgpu$/, /^@nats-io\//] },
  cli: {
    ferry: ['common', 'protocol', 'events', 'client', 'core', 'coordinator', 'worker', 'dashboard'],
    forbid: [/^@tensorflow\//],
  },
};

// Subpath entries a package declares in its manifest's "exports" besides its main one (e.g.
// @ferry/core/internal: the engine's kernels, for tests and benchmarks); any other subpath is a deep import.
const ENTRIES = new Set(['@ferry/core/internal']);

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const problems = [];
const edges = new Map();
/** Per package: file -> the package's files it imports (relative imports). */
const fileEdges = new Map();

function walk(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.ts$/.test(name)) out.push(p);
  }
  return out;
}

for (const pkg of readdirSync(path.join(root, 'packages'))) {
  const src = path.join(root, 'packages', pkg, 'src');
  if (!existsSync(src)) continue;
  const rule = ALLOWED[pkg];
  if (!rule) {
    problems.push(`packages/${pkg}: not in the dependency table of scripts/check-deps.mjs`);
    continue;
  }
  const manifest = JSON.parse(readFileSync(path.join(root, 'packages', pkg, 'package.json'), 'utf8'));
  const declared = new Set([
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.optionalDependencies ?? {}),
  ]);
  edges.set(pkg, new Set());
  const files = new Map();
  fileEdges.set(pkg, files);
  for (const file of walk(src).filter((f) => !(rule.skip && rule.skip.test(f)))) {
    const text = readFileSync(file, 'utf8');
    const rel = path.relative(root, file);
    files.set(rel, new Set());
    for (const m of text.matchAll(/(?:^|[\s;])(?:from\s+|import\s+|import\s*\(\s*)'([^']+)'/gm)) {
      const spec = m[1];
      if (spec.startsWith('.') || spec.startsWith('node:')) {
        if (spec.includes('/packages/') || /\.\.\/\.\.\/\.\.\//.test(spec))
          problems.push(`${rel}: relative import leaves the package: ${spec}`);
        else if (spec.startsWith('.')) files.get(rel).add(resolveRelative(file, spec));
        continue;
      }
      const ferry = /^@ferry\/([^/]+)(\/.*)?$/.exec(spec);
      if (ferry) {
        if (ferry[2] && !ENTRIES.has(spec))
          problems.push(`${rel}: deep import ${spec}; import @ferry/${ferry[1]} by its entry point`);
        if (!rule.ferry.includes(ferry[1])) problems.push(`${rel}: ${pkg} must not depend on @ferry/${ferry[1]}`);
        edges.get(pkg).add(ferry[1]);
      }
      for (const f of rule.forbid) if (f.test(spec)) problems.push(`${rel}: ${pkg} must not import ${spec}`);
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
      if (!declared.has(name) && !/^(tf)$/.test(name))
        problems.push(`${rel}: imports ${name}, which packages/${pkg}/package.json does not declare`);
    }
  }
}

/** The package file a relative import names (`./x.js` is `./x.ts` in src/). */
function resolveRelative(from, spec) {
  const target = path.resolve(path.dirname(from), spec);
  for (const candidate of [target.replace(/\.js$/, '.ts'), target, `${target}.ts`, path.join(target, 'index.ts')])
    if (existsSync(candidate) && statSync(candidate).isFile()) return path.relative(root, candidate);
  return path.relative(root, target);
}

/** Every cycle of a graph (its strongly connected components of more than one node, or a self-import). */
function cyclesOf(graph) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const found = [];
  const connect = (v) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) !== idx.get(v)) return;
    const scc = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || graph.get(v)?.has(v)) found.push(scc.sort());
  };
  for (const v of graph.keys()) if (!idx.has(v)) connect(v);
  return found;
}

// Cycles among each package's own files.
let fileCount = 0;
for (const [pkg, files] of fileEdges) {
  fileCount += files.size;
  for (const scc of cyclesOf(files))
    problems.push(
      `import cycle in packages/${pkg}/src: ${scc.map((f) => path.relative(path.join('packages', pkg, 'src'), f)).join(', ')} import each other (directly or through one another)`,
    );
}

// Cycle check over the package graph.
const state = new Map();
function visit(n, trail) {
  if (state.get(n) === 'done') return;
  if (state.get(n) === 'active') {
    problems.push(`dependency cycle: ${[...trail, n].join(' -> ')}`);
    return;
  }
  state.set(n, 'active');
  for (const m of edges.get(n) ?? []) visit(m, [...trail, n]);
  state.set(n, 'done');
}
for (const n of edges.keys()) visit(n, []);

// docs/architecture.md's package table is this script's: the imports found and the rules, between
// two markers. `node scripts/check-deps.mjs --write-docs` rewrites it; otherwise a difference fails.
const DOC = path.join(root, 'docs', 'architecture.md');
const START = '<!-- deps:start (generated by node scripts/check-deps.mjs --write-docs) -->';
const END = '<!-- deps:end -->';
/** Packages in dependency order (a package after everything it imports), then by name. */
function ordered() {
  const depth = new Map();
  const depthOf = (n) => {
    if (depth.get(n) === 'visiting') return 0; // a cycle, reported above; the table is still written
    if (!depth.has(n)) {
      depth.set(n, 'visiting');
      depth.set(n, 1 + Math.max(-1, ...[...(edges.get(n) ?? [])].map(depthOf)));
    }
    return depth.get(n);
  };
  return [...edges.keys()].sort((a, b) => depthOf(a) - depthOf(b) || a.localeCompare(b));
}
function depsTable() {
  const list = (xs) => (xs.length ? xs.map((x) => `\`${x}\``).join(', ') : '(none)');
  const rows = ordered().map((pkg) => {
    const uses = [...edges.get(pkg)].sort();
    const unused = ALLOWED[pkg].ferry.filter((x) => !uses.includes(x));
    const never = ALLOWED[pkg].forbid.map((r) => r.source.replace(/^\^/, '').replace(/\\\//g, '/').replace(/\$$/, ''));
    return `| \`${pkg}\` | ${list(uses)} | ${unused.length ? list(unused) : ''} | ${never.includes('.') ? 'any library' : list(never)} |`;
  });
  return [
    START,
    '| package | imports (`@ferry/*`) | may import, does not | never imports |',
    '|---|---|---|---|',
    ...rows,
    END,
  ].join('\n');
}
if (existsSync(DOC)) {
  const doc = readFileSync(DOC, 'utf8');
  const at = doc.indexOf(START);
  const end = doc.indexOf(END);
  if (at < 0 || end < at) problems.push(`docs/architecture.md: no package table between ${START} and ${END}`);
  else {
    const want = `${doc.slice(0, at)}${depsTable()}${doc.slice(end + END.length)}`;
    if (process.argv.includes('--write-docs')) writeFileSync(DOC, want);
    else if (want !== doc)
      problems.push(
        'docs/architecture.md: its package table differs from the imports and rules here; run node scripts/check-deps.mjs --write-docs',
      );
  }
}

if (problems.length > 0) {
  console.error(`check-deps: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`check-deps: ${edges.size} packages, dependencies point one way; ${fileCount} files, no import cycle`);
