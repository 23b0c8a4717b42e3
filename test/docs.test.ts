import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { REPO_ROOT } from './helpers/torch-ref.js';

/**
 * The docs stand alone: every repository path a doc, a comment or a script names exists, every
 * relative link in a Markdown file resolves, and every Markdown page named anywhere is one of the
 * repository's own (so no text leans on a page that is not here).
 */
const TEXT = /\.(md|ts|js|mjs|cjs|sh|py|yaml|yml|cc|h|gyp|proto)$/;
const all = execFileSync('git', ['ls-files'], { cwd: REPO_ROOT, encoding: 'utf8' })
  .split('\n')
  .filter((f) => f && existsSync(path.join(REPO_ROOT, f)));
const files = all.filter((f) => TEXT.test(f) && !f.startsWith('packages/protocol/src/gen/'));

// A path from the repository's root: a top folder, then names; one followed by a placeholder
// (`${x}`, `<name>`, `*`, `{a,b}`) is a pattern, not a path.
const ROOT_PATH =
  /(?<![\w./@-])((?:packages|docs|test|bench|scripts|examples|deploy|proto)\/[\w.\-/]*[\w])(?![\w$<*{])/g;
const MD_LINK = /\]\((?!https?:|mailto:|#)([^)\s]+?)(?:#[^)]*)?\)/g;
const MD_NAME = /(?<![\w./-])([\w.-]+\.md)\b/g;

/** Files ferry writes (a run's results.md), named as outputs, not as pages. */
const OUTPUT_NAMES = new Set(['results.md']);
const PACKAGES = [...new Set(files.filter((f) => f.startsWith('packages/')).map((f) => f.split('/')[1]!))];

/** What the repository holds: its files and their folders (not what a build or a run left here). */
const TRACKED = new Set(all.flatMap((f) => f.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
/** Outputs of the build that docs name (the torch addon, compiled packages). */
const BUILT = [/^packages\/torch\/build(\/|$)/, /^packages\/[^/]+\/dist(\/|$)/];

/**
 * Whether `p` names something of the repository: from its root, or (a package's own scripts,
 * binding.gyp, a listing of one package's files in a doc) from a package's folder.
 */
function exists(p: string): boolean {
  return [p, ...PACKAGES.map((pkg) => `packages/${pkg}/${p}`)].some(
    (x) => TRACKED.has(x) || BUILT.some((b) => b.test(x)),
  );
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function problems(): string[] {
  const out: string[] = [];
  const mdNames = new Set([...files.filter((f) => f.endsWith('.md')).map((f) => path.basename(f)), ...OUTPUT_NAMES]);
  for (const file of files) {
    const text = readFileSync(path.join(REPO_ROOT, file), 'utf8');
    for (const m of text.matchAll(ROOT_PATH)) {
      const p = m[1]!.replace(/[.]+$/, '');
      if (!exists(p)) out.push(`${file}: names ${p}, which does not exist`);
    }
    if (file.endsWith('.md'))
      for (const m of text.matchAll(MD_LINK)) {
        const target = path.normalize(path.join(path.dirname(file), safeDecode(m[1]!)));
        if (!TRACKED.has(target)) out.push(`${file}: links to ${m[1]}, which is not in the repository`);
      }
    for (const m of text.matchAll(MD_NAME))
      if (!mdNames.has(m[1]!)) out.push(`${file}: names ${m[1]}, which is not a page of this repository`);
  }
  return [...new Set(out)];
}

describe('the docs stand alone', () => {
  test('every path a doc or comment names exists; every Markdown link resolves; no page from outside is named', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(problems()).toEqual([]);
  });
});
