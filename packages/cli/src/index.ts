/** @ferry/cli: the `ferry` command (wiring and argument parsing only). */
export { main } from './main.js';
export type { CliIo } from './io.js';
