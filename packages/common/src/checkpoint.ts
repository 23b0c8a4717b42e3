/**
 * The format tag in a ferry checkpoint's metadata (`__metadata__.ferry.format`): the engine writes
 * it, the coordinator checks uploads for it.
 */
export const CHECKPOINT_FORMAT = 'ferry-checkpoint/1';
