/** @ferry/events: the NATS adapter shared by the coordinator, the workers and the dashboard. */
export { connectNats, natsOptions, type NatsTarget } from './connection.js';
export { ensureStream } from './stream.js';
export { EventPublisher, type PublisherOptions } from './publisher.js';
export { EventSubscriber } from './subscriber.js';
