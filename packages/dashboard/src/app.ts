import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { tableCsv, tableMarkdown } from '@ferry/common';
import { cellSummary, downsample, type DashboardState } from './state.js';

export interface DashboardAppOptions {
  readonly state: DashboardState;
  /** Required on every request (header, `?token=` or the cookie set from it) when set. */
  readonly token?: string;
  /** Least time between two live pushes (changes in between are merged). */
  readonly pushIntervalMs?: number;
  readonly logger?: boolean;
}

/** The live-update hub: the subscriber calls `changed()`, SSE clients get merged notifications. */
export class ChangeFeed {
  private readonly listeners = new Set<(data: string) => void>();
  private pending = { sweeps: new Set<string>(), cells: new Set<string>(), workers: false };
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly intervalMs: number) {}

  changed(c: { sweepId: string; cellId?: string; workerId?: string }): void {
    this.pending.sweeps.add(c.sweepId);
    if (c.cellId) this.pending.cells.add(c.cellId);
    if (c.workerId) this.pending.workers = true;
    this.timer ??= setTimeout(() => this.flush(), this.intervalMs);
  }

  private flush(): void {
    this.timer = null;
    const data = JSON.stringify({
      sweeps: [...this.pending.sweeps],
      cells: [...this.pending.cells].slice(0, 200),
      workers: this.pending.workers,
    });
    this.pending = { sweeps: new Set(), cells: new Set(), workers: false };
    for (const l of this.listeners) l(data);
  }

  subscribe(l: (data: string) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.listeners.clear();
  }
}

const require = createRequire(import.meta.url);
const PUBLIC = (name: string): string => fileURLToPath(new URL(`../public/${name}`, import.meta.url));

/**
 * Constant-time comparison of a presented token with the secret. Lengths are compared in bytes:
 * a multibyte string of the token's character length must be refused, not throw (500) and so
 * reveal the length.
 */
function sameSecret(presented: string, want: Buffer): boolean {
  const got = Buffer.from(presented);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** A cookie value as sent, undone; a malformed escape is a wrong token, not a server error. */
function safeDecode(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return '';
  }
}

/**
 * Every answer forbids running scripts from anywhere but this origin (an event's text that slipped
 * past escaping still cannot run), framing, and type sniffing. Inline style attributes stay allowed
 * (the progress bars set their width).
 */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** The dashboard's fastify app: JSON API, server-sent events, static UI. Read-only. */
export function buildApp(options: DashboardAppOptions): { app: FastifyInstance; feed: ChangeFeed } {
  const app = Fastify({ logger: options.logger ?? false });
  const feed = new ChangeFeed(options.pushIntervalMs ?? 250);
  const state = options.state;
  const token = options.token;

  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) void reply.header(k, v);
    return payload;
  });

  if (token) {
    const want = Buffer.from(token);
    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      if (req.url === '/healthz') return;
      const header = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
      const query = (req.query as Record<string, string | undefined>)['token'] ?? '';
      const cookie = /(?:^|;\s*)ferry_token=([^;]+)/.exec(String(req.headers.cookie ?? ''))?.[1] ?? '';
      const ok = [header, typeof query === 'string' ? query : '', safeDecode(cookie)].some((t) => sameSecret(t, want));
      if (!ok) {
        await reply
          .code(401)
          .send({ error: 'missing or wrong token (Authorization: Bearer, ?token= or the ferry_token cookie)' });
        return;
      }
      if (query)
        void reply.header('set-cookie', `ferry_token=${encodeURIComponent(query)}; HttpOnly; SameSite=Strict; Path=/`);
    });
  }

  const statics: Record<string, string> = { '/': 'index.html', '/app.js': 'app.js', '/style.css': 'style.css' };
  const types: Record<string, string> = {
    html: 'text/html; charset=utf-8',
    js: 'text/javascript; charset=utf-8',
    css: 'text/css; charset=utf-8',
  };
  for (const [route, file] of Object.entries(statics)) {
    const body = readFileSync(PUBLIC(file), 'utf8');
    app.get(route, async (_req, reply) => reply.type(types[file.split('.').pop()!]!).send(body));
  }
  // uPlot (the charts), served from its npm package: same origin, so the CSP stays script-src 'self'.
  const vendor: Record<string, [string, string]> = {
    '/vendor/uPlot.iife.min.js': [require.resolve('uplot/dist/uPlot.iife.min.js'), types['js']!],
    '/vendor/uPlot.min.css': [require.resolve('uplot/dist/uPlot.min.css'), types['css']!],
  };
  for (const [route, [file, type]] of Object.entries(vendor)) {
    const body = readFileSync(file, 'utf8');
    app.get(route, async (_req, reply) => reply.type(type).header('cache-control', 'max-age=86400').send(body));
  }

  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send());

  app.get('/healthz', async () => ({ ok: true, events: state.events }));

  app.get('/api/sweeps', async () =>
    [...state.sweeps.values()]
      .filter((s) => s.sweepId !== '_cluster')
      .map((s) => {
        const cells = [...s.cells.values()];
        const count = (st: string): number => cells.filter((c) => c.state === st).length;
        return {
          sweepId: s.sweepId,
          name: s.name,
          createdAt: s.createdAt,
          cells: Math.max(s.declaredCells, cells.length),
          done: count('done'),
          running: count('running'),
          failed: count('failed'),
        };
      }),
  );

  app.get('/api/sweeps/:id', async (req, reply) => {
    const s = state.sweeps.get((req.params as { id: string }).id);
    if (!s) return reply.code(404).send({ error: 'no such sweep' });
    const workers = [...state.workers.values()].filter((w) => w.state !== 'stopped');
    return {
      sweepId: s.sweepId,
      name: s.name,
      createdAt: s.createdAt,
      cells: [...s.cells.values()].map(cellSummary),
      workers,
      processes: s.processes,
      table: state.table(s.sweepId),
    };
  });

  app.get('/api/sweeps/:id/table', async (req, reply) => {
    const id = (req.params as { id: string }).id;
    if (!state.sweeps.has(id)) return reply.code(404).send({ error: 'no such sweep' });
    const t = state.table(id);
    const format = (req.query as { format?: string }).format ?? 'json';
    if (format === 'csv')
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="${id}.csv"`)
        .send(`${tableCsv(t)}\n`);
    if (format === 'md')
      return reply
        .type('text/markdown; charset=utf-8')
        .header('content-disposition', `attachment; filename="${id}.md"`)
        .send(`${tableMarkdown(t)}\n`);
    if (format === 'json') return t;
    return reply.code(400).send({ error: 'format must be json, csv or md' });
  });

  app.get('/api/cells/:id', async (req, reply) => {
    const id = (req.params as { id: string }).id;
    for (const s of state.sweeps.values()) {
      const c = s.cells.get(id);
      if (!c) continue;
      return {
        ...cellSummary(c),
        spec: c.spec,
        curves: downsample(c.epochs, 200),
        steps: downsample(c.steps, 300),
        classes: c.classes,
        confusion: c.confusion,
        perClassAccuracy: c.perClassAccuracy,
        bestEpoch: c.bestEpoch,
      };
    }
    return reply.code(404).send({ error: 'no such cell' });
  });

  app.get('/api/events', (req, reply) => {
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    reply.raw.write(': connected\n\n');
    const unsubscribe = feed.subscribe((data) => reply.raw.write(`data: ${data}\n\n`));
    const ping = setInterval(() => reply.raw.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      unsubscribe();
    });
  });

  app.addHook('onClose', async () => feed.close());
  return { app, feed };
}
