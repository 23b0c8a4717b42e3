import { isLoopbackHost } from '@ferry/common';
import { EventSubscriber, type NatsTarget } from '@ferry/events';
import type { FerryEvent } from '@ferry/protocol';
import { buildApp } from './app.js';
import { DashboardState } from './state.js';

/**
 * Where a dashboard's events come from when not from NATS: a coordinator's Events.Watch feed, or a
 * finished run's state (the CLI builds either; see `ferry dashboard`).
 */
export interface EventFeed {
  /** Starts delivering events (history first); resolves once the history has been applied. */
  start(onEvent: (e: FerryEvent) => void): Promise<void>;
  stop(): Promise<void>;
}

export interface DashboardOptions {
  readonly listen?: string;
  /** JetStream (replayed, then live) or another feed: exactly one. */
  readonly nats?: NatsTarget;
  readonly feed?: EventFeed;
  readonly token?: string;
  readonly insecure?: boolean;
  readonly log?: (line: string) => void;
}

/** The dashboard process: replays and follows the FERRY stream, serves the app. Returns its URL and a stop function. */
export async function startDashboard(
  o: DashboardOptions,
): Promise<{ url: string; state: DashboardState; stop: () => Promise<void> }> {
  const listen = o.listen ?? '127.0.0.1:8080';
  const m = /^(.*):(\d+)$/.exec(listen);
  if (!m) throw new Error(`--listen ${listen}: expected host:port`);
  const host = m[1]!.replace(/^\[|\]$/g, '');
  if (!isLoopbackHost(host) && !o.token && !o.insecure)
    throw new Error(`binding the dashboard to ${listen} (not loopback) needs --token, or an explicit --insecure`);
  const state = new DashboardState();
  const { app, feed } = buildApp({ state, ...(o.token ? { token: o.token } : {}) });
  const onEvent = (e: FerryEvent): void => {
    const c = state.apply(e);
    if (c) feed.changed(c);
  };
  if (!o.nats === !o.feed) throw new Error('give the dashboard exactly one event source: NATS or a feed');
  const nats = o.nats;
  const sub: EventFeed = nats
    ? (() => {
        const s = new EventSubscriber(nats, (_subject, e) => onEvent(e), o.log);
        return { start: async () => s.start(), stop: async () => s.stop() };
      })()
    : o.feed!;
  await sub.start(onEvent);
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
