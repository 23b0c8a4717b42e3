/** Errors of sweep files, with the path inside the file and what is allowed. */
export class SweepError extends Error {
  readonly code = 'FERRY_ERR_SWEEP_INVALID' as const;
  constructor(
    readonly problems: readonly string[],
    readonly file: string,
  ) {
    super(`${file}: ${problems.length} problem${problems.length > 1 ? 's' : ''}:\n  ${problems.join('\n  ')}`);
    this.name = 'SweepError';
  }
}
