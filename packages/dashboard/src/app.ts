import path from 'node:path';
import fastifyCookie from '@fastify/cookie';
import fastifyStatic from '@fastify/static';
import { Type, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import { sameSecret, tableCsv, tableMarkdown } from '@ferry/common';
import {
  CELL_DETAIL,
  ERROR_REPLY,
  HEALTH,
  SWEEP_DETAIL,
  SWEEP_LIST,
  TABLE,
  cellSummary,
  type CellDetail,
  type SweepDetail,
  type SweepListItem,
} from './api.js';
import { UPLOT_FILES, publicFile } from './assets.js';
import { downsample, type DashboardState } from './state.js';

/** The app with TypeBox as its type provider: a route's schemas are its request and reply types. */
type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

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
const TOKEN_QUERY = Type.Object(
  { token: Type.Optional(Type.String({ maxLength: 1024 })) },
  { additionalProperties: false },
);

/** A sweep or cell id in the path. */
const ID_PARAMS = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 100, description: 'an id of 1 to 100 characters' }),
});

const TABLE_QUERY = Type.Object(
  {
    ...TOKEN_QUERY.properties,
    format: Type.Optional(
      Type.Union([Type.Literal('json'), Type.Literal('csv'), Type.Literal('md')], {
        description: 'format must be json, csv or md',
      }),
    ),
  },
  { additionalProperties: false },
);

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

/**
 * Every answer's security headers; with a token, every request but /healthz must present it (as
 * a bearer token, `?token=`, or the ferry_token cookie that a `?token=` sets). Checked before any
 * validation, so a request without the token learns nothing of the routes.
 */
function registerSecurity(app: App, token: string | undefined): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) void reply.header(k, v);
    return payload;
  });
  if (!token) return;
  const want = Buffer.from(token);
  // preValidation: after @fastify/cookie has parsed the cookies (its onRequest hook).
  app.addHook('preValidation', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.url === '/healthz') return;
    const header = String(req.headers.authorization ?? '').replace(/^Bearer /, '');
    const query = (req.query as Record<string, unknown> | undefined)?.['token'];
    const given = [header, typeof query === 'string' ? query : '', req.cookies['ferry_token'] ?? ''];
    if (!given.some((t) => sameSecret(t, want))) {
      await reply
        .code(401)
        .send({ error: 'missing or wrong token (Authorization: Bearer, ?token= or the ferry_token cookie)' });
      return;
    }
    if (typeof query === 'string' && query)
      void reply.setCookie('ferry_token', query, { httpOnly: true, sameSite: 'strict', path: '/' });
  });
}

/** The browser code's files (public/); anything else there (its type declarations) is not served. */
const PUBLIC_FILES = new Set(['index.html', 'app.js', 'chart.js', 'style.css']);
const UPLOT_NAMES = new Set([path.basename(UPLOT_FILES.js), path.basename(UPLOT_FILES.css)]);

/**
 * The UI (public/) and uPlot, served from its npm package by @fastify/static: same origin, so the
 * CSP stays script-src 'self'.
 */
function registerStatic(app: App): void {
  void app.register(fastifyStatic, {
    root: path.dirname(publicFile('index.html')),
    index: 'index.html',
    // A route per file, no catch-all: an unknown path stays the router's (404, or 414 past an id's length).
    wildcard: false,
    cacheControl: false,
    allowedPath: (p) => PUBLIC_FILES.has(p.replace(/^\//, '') || 'index.html'),
  });
  void app.register(fastifyStatic, {
    root: path.dirname(UPLOT_FILES.js),
    prefix: '/vendor/',
    decorateReply: false,
    wildcard: false,
    maxAge: 86_400_000,
    allowedPath: (p) => UPLOT_NAMES.has(p.replace(/^\//, '')),
  });
  app.get('/favicon.ico', { schema: { querystring: TOKEN_QUERY } }, async (_req, reply) => reply.code(204).send());
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

/** The JSON API (read-only); each route's params, query and replies are its schema. */
function registerApi(app: App, state: DashboardState): void {
  app.get('/healthz', { schema: { querystring: TOKEN_QUERY, response: { 200: HEALTH } } }, async () => ({
    ok: true,
    events: state.events,
  }));
  app.get(
    '/api/sweeps',
    { schema: { querystring: TOKEN_QUERY, response: { 200: SWEEP_LIST } } },
    async (): Promise<SweepListItem[]> => sweepList(state),
  );
  app.get(
    '/api/sweeps/:id',
    { schema: { querystring: TOKEN_QUERY, params: ID_PARAMS, response: { 200: SWEEP_DETAIL, 404: ERROR_REPLY } } },
    async (req, reply) => {
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
    },
  );
  app.get(
    '/api/sweeps/:id/table',
    // 200: the table as JSON, or as CSV or Markdown text (sent as it is).
    {
      schema: {
        querystring: TABLE_QUERY,
        params: ID_PARAMS,
        response: { 200: Type.Union([TABLE, Type.String()]), 404: ERROR_REPLY },
      },
    },
    async (req, reply) => {
      const id = req.params.id;
      if (!state.sweeps.has(id)) return reply.code(404).send({ error: 'no such sweep' });
      const t = state.table(id);
      const format = req.query.format ?? 'json';
      if (format === 'json') return t;
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'text/markdown; charset=utf-8')
        .header('content-disposition', `attachment; filename="${id}.${format}"`)
        .send(`${format === 'csv' ? tableCsv(t) : tableMarkdown(t)}\n`);
    },
  );
  app.get(
    '/api/cells/:id',
    { schema: { querystring: TOKEN_QUERY, params: ID_PARAMS, response: { 200: CELL_DETAIL, 404: ERROR_REPLY } } },
    async (req, reply) => cellDetail(state, req.params.id) ?? reply.code(404).send({ error: 'no such cell' }),
  );
}

/** `/api/events`: server-sent notifications of what changed (merged, at most every pushIntervalMs). */
function registerEvents(app: App, feed: ChangeFeed): void {
  app.get('/api/events', { schema: { querystring: TOKEN_QUERY } }, (req, reply) => {
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
 * declares the schemas of its params, querystring and replies (TypeBox: the schema is the type);
 * bad input is fastify's 400. Cookies and static files are fastify's own plugins.
 */
export function buildApp(options: DashboardAppOptions): { app: FastifyInstance; feed: ChangeFeed } {
  const app = Fastify({ logger: options.logger ?? false }).withTypeProvider<TypeBoxTypeProvider>();
  const feed = new ChangeFeed(options.pushIntervalMs ?? 250);
  app.setErrorHandler(validationError);
  void app.register(fastifyCookie);
  registerSecurity(app, options.token);
  registerStatic(app);
  registerApi(app, options.state);
  registerEvents(app, feed);
  return { app, feed };
}
