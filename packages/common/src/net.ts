/**
 * Whether a listen host is a loopback address, parsed rather than matched by prefix: a name such
 * as `127.evil.example` is a host name that resolves anywhere, not the loopback network. Accepts
 * `localhost`, dotted-quad IPv4 in 127.0.0.0/8, `::1` in its short and full forms, and
 * IPv4-mapped `::ffff:127.x.y.z`; brackets around IPv6 are allowed.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (v4) return v4.slice(1).every((o) => Number(o) <= 255) && v4[1] === '127';
  return h === '::1' || /^0{1,4}(?::0{1,4}){6}:0{0,3}1$/.test(h);
}

/** "host:port" -> parts (IPv6 keeps its brackets: `[::1]:50051` -> host `[::1]`). */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address);
  if (!m) throw new Error(`"${address}" is not host:port`);
  return { host: m[1]!, port: Number(m[2]) };
}
