#!/usr/bin/env node
// Enforces ferry's one-way package dependencies (docs/architecture.md): which @ferry packages and
// which heavy libraries each package may import, no deep imports into a sibling's src/, no cycles.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import path from 'node:path';

const ALLOWED = {
  common: { ferry: [], forbid: [/./] },
  protocol: { ferry: [], forbid: [/^@tensorflow\//], skip: /\/gen\// },
  events: { ferry: ['common', 'protocol'], forbid: [/^@tensorflow\//, /^@grpc\//] },
  core: { ferry: ['common', 'protocol'], forbid: [/^@grpc\//, /^@nats-io\//, /^fastify/] },
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
  for (const file of walk(src).filter((f) => !(rule.skip && rule.skip.test(f)))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:^|[\s;])(?:from\s+|import\s+|import\s*\(\s*)'([^']+)'/gm)) {
      const spec = m[1];
      const rel = path.relative(root, file);
      if (spec.startsWith('.') || spec.startsWith('node:')) {
        if (spec.includes('/packages/') || /\.\.\/\.\.\/\.\.\//.test(spec))
          problems.push(`${rel}: relative import leaves the package: ${spec}`);
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

if (problems.length > 0) {
  console.error(`check-deps: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`check-deps: ${edges.size} packages, dependencies point one way`);
