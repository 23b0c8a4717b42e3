import { isLoopbackHost } from '@ferry/common';
import { EventSubscriber, type NatsTarget } from '@ferry/events';
import { buildApp } from './app.js';
import { DashboardState } from './state.js';

export interface DashboardOptions {
  readonly listen?: string;
  readonly nats: NatsTarget;
  readonly token?: string;
  readonly insecure?: boolean;
  readonly log?: (line: string) => void;
}


/** The dashboard process: replays and follows the FERRY stream, serves the app. Returns its URL and a stop function. */
export async function startDashboard(o: DashboardOptions): Promise<{ url: string; state: DashboardState; stop: () => Promise<void> }> {
  const listen = o.listen ?? '127.0.0.1:8080';
  const m = /^(.*):(\d+)$/.exec(listen);
  if (!m) throw new Error(`--listen ${listen}: expected host:port`);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  if (!isLoopbackHost(host) && !o.token && !o.insecure) throw new Error(`binding the dashboard to ${listen} (not loopback) needs --token, or an explicit --insecure`);
  const state = new DashboardState();
  const { app, feed } = buildApp({ state, ...(o.token ? { token: o.token } : {}) });
  const sub = new EventSubscriber(
    o.nats,
    (_subject, e) => {
      const c = state.apply(e);
      if (c) feed.changed(c);
    },
    o.log,
  );
  await sub.start();
  await app.listen({ host, port: Number(m[2]) });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : Number(m[2]);
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    state,
    stop: async () => {
      await sub.stop();
      await app.close();
    },
  };
}
