import { jetstreamManager, StorageType } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { STREAM_NAME, STREAM_SUBJECTS } from '@ferry/protocol';

/** Creates the FERRY stream (file storage, subjects ferry.>) unless it exists. */
export async function ensureStream(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.info(STREAM_NAME);
  } catch {
    try {
      await jsm.streams.add({ name: STREAM_NAME, subjects: STREAM_SUBJECTS, storage: StorageType.File });
    } catch (e) {
      // Another process created it in between.
      if (!/already in use|exists/i.test((e as Error).message)) throw e;
    }
  }
}
