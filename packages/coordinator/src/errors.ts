import { FerryError } from '@ferry/common';
/** Errors of sweep files, with the path inside the file and what is allowed. */
export class SweepError extends FerryError {
  constructor(
    readonly problems: readonly string[],
    readonly file: string,
  ) {
    super(
      'FERRY_ERR_SWEEP_INVALID',
      `${file}: ${problems.length} problem${problems.length > 1 ? 's' : ''}:\n  ${problems.join('\n  ')}`,
    );
  }
}
