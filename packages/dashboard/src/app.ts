import { readFileSync } from 'node:fs';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { sameSecret, tableCsv, tableMarkdown } from '@ferry/common';
import type { CellDetail, SweepDetail, SweepListItem } from './api.js';
import { UPLOT_FILES, publicFile } from './assets.js';
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

/** `?token=` is the only query parameter every route takes (others are dropped). */
const TOKEN_QUERY = {
  type: 'object',
  properties: { token: { type: 'string', maxLength: 1024 } },
  additionalProperties: false,
} as const;

/** A sweep or cell id in the path. */
const ID_PARAMS = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 100, description: 'an id of 1 to 100 characters' } },
} as const;

const TABLE_QUERY = {
  type: 'object',
  properties: {
    ...TOKEN_QUERY.properties,
    format: {
      type: 'string',
      enum: ['json', 'csv', 'md'],
      default: 'json',
      description: 'format must be json, csv or md',
    },
  },
  additionalProperties: false,
} as const;

/** Route options: the schemas of the params and the querystring. */
const schema = (querystring: object, params?: object): { schema: { querystring: object; params?: object } } => ({
  schema: { querystring, ...(params ? { params } : {}) },
});

/**
 * A request that fails its route's schema: 400 with `{ error }`, the failing property's description
 * when it has one (what the value must be), else fastify's message.
 */
function validationError(error: FastifyError, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (!error.validation) {
    const status = error.statusCode ?? 500;
    return reply.code(status).send({ error: status >= 500 ? 'internal error' : error.message });
  }
  const first = error.validation[0];
  const key = first?.instancePath.replace(/^\//, '') || String(first?.params?.['missingProperty'] ?? '');
  const part = (req.routeOptions.schema as Record<string, { properties?: Record<string, { description?: string }> }>)?.[
    error.validationContext ?? ''
  ];
  return reply.code(400).send({ error: part?.properties?.[key]?.description ?? error.message });
}

/** Every answer's security headers; with a token, every request but /healthz must present it. */
function registerSecurity(app: FastifyInstance, token: string | undefined): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) void reply.header(k, v);
    return payload;
  });
  if (!token) return;
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

const TYPES: Readonly<Record<string, string>> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

/** The UI (public/) and uPlot, served from its npm package: same origin, so the CSP stays script-src 'self'. */
function registerStatic(app: FastifyInstance): void {
  const files: Record<string, [string, string]> = {
    '/': [publicFile('index.html'), ''],
    '/app.js': [publicFile('app.js'), ''],
    '/chart.js': [publicFile('chart.js'), ''],
    '/style.css': [publicFile('style.css'), ''],
    '/vendor/uPlot.iife.min.js': [UPLOT_FILES.js, 'max-age=86400'],
    '/vendor/uPlot.min.css': [UPLOT_FILES.css, 'max-age=86400'],
  };
  for (const [route, [file, cache]] of Object.entries(files)) {
    const body = readFileSync(file, 'utf8');
    const type = TYPES[file.split('.').pop()!]!;
    app.get(route, schema(TOKEN_QUERY), async (_req, reply) => {
      if (cache) void reply.header('cache-control', cache);
      return reply.type(type).send(body);
    });
  }
  app.get('/favicon.ico', schema(TOKEN_QUERY), async (_req, reply) => reply.code(204).send());
}

/** `/api/sweeps`: each sweep with its counts. */
function sweepList(state: DashboardState): SweepListItem[] {
  return [...state.sweeps.values()]
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
        blocked: count('blocked'),
      };
    });
}

/** `/api/cells/:id`: a cell with its curves, steps and confusion matrix (undefined: no such cell). */
function cellDetail(state: DashboardState, id: string): CellDetail | undefined {
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
  return undefined;
}

/** The JSON API (read-only). */
function registerApi(app: FastifyInstance, state: DashboardState): void {
  app.get('/healthz', schema(TOKEN_QUERY), async () => ({ ok: true, events: state.events }));
  app.get('/api/sweeps', schema(TOKEN_QUERY), async () => sweepList(state));
  app.get<{ Params: { id: string } }>('/api/sweeps/:id', schema(TOKEN_QUERY, ID_PARAMS), async (req, reply) => {
    const s = state.sweeps.get(req.params.id);
    if (!s) return reply.code(404).send({ error: 'no such sweep' });
    const detail: SweepDetail = {
      sweepId: s.sweepId,
      name: s.name,
      createdAt: s.createdAt,
      cells: [...s.cells.values()].map(cellSummary),
      workers: [...state.workers.values()].filter((w) => w.state !== 'stopped'),
      jobs: [...state.jobs.values()],
      processes: s.processes,
      table: state.table(s.sweepId),
    };
    return detail;
  });
  app.get<{ Params: { id: string }; Querystring: { format: 'json' | 'csv' | 'md' } }>(
    '/api/sweeps/:id/table',
    schema(TABLE_QUERY, ID_PARAMS),
    async (req, reply) => {
      const id = req.params.id;
      if (!state.sweeps.has(id)) return reply.code(404).send({ error: 'no such sweep' });
      const t = state.table(id);
      const format = req.query.format;
      if (format === 'json') return t;
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'text/markdown; charset=utf-8')
        .header('content-disposition', `attachment; filename="${id}.${format}"`)
        .send(`${format === 'csv' ? tableCsv(t) : tableMarkdown(t)}\n`);
    },
  );
  app.get<{ Params: { id: string } }>('/api/cells/:id', schema(TOKEN_QUERY, ID_PARAMS), async (req, reply) => {
    return cellDetail(state, req.params.id) ?? reply.code(404).send({ error: 'no such cell' });
  });
}

/** `/api/events`: server-sent notifications of what changed (merged, at most every pushIntervalMs). */
function registerEvents(app: FastifyInstance, feed: ChangeFeed): void {
  app.get('/api/events', schema(TOKEN_QUERY), (req, reply) => {
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
}

/**
 * The dashboard's fastify app: JSON API, server-sent events, static UI. Read-only. Every route
 * declares the JSON Schema of its params and querystring: bad input is fastify's 400.
 */
export function buildApp(options: DashboardAppOptions): { app: FastifyInstance; feed: ChangeFeed } {
  const app = Fastify({ logger: options.logger ?? false });
  const feed = new ChangeFeed(options.pushIntervalMs ?? 250);
  app.setErrorHandler(validationError);
  registerSecurity(app, options.token);
  registerStatic(app);
  registerApi(app, options.state);
  registerEvents(app, feed);
  return { app, feed };
}
