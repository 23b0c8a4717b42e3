#!/usr/bin/env node
import { main } from '../dist/main.js';

// A reader that stops early (`ferry sweep results | head`) is not an error: end quietly.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });

const code = await main(process.argv.slice(2), {
  env: process.env,
  stdout: process.stdout,
  stderr: process.stderr,
});
process.exitCode = code;
// Background reconnect timers (NATS unreachable at exit, for instance) must not keep a finished
// command alive; normal exits happen before this fires.
setTimeout(() => process.exit(code), 2_000).unref();
