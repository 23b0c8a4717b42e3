/** Address helpers shared by the servers' security checks (loopback: @ferry/common's isLoopbackHost). */

/** "host:port" -> parts (IPv6 in brackets). */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(address);
  if (!m) throw new Error(`"${address}" is not host:port`);
  return { host: m[1]!, port: Number(m[2]) };
}
