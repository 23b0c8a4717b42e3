import * as tf from '@tensorflow/tfjs-core';
import { DeviceError } from '../errors.js';

/**
 * WebGPU reports invalid programs and out-of-memory asynchronously, as events, and the commands
 * concerned then do nothing: the results would be silently wrong. ferry records every such report
 * against the device that made it; assertDeviceHealthy turns them into an error at the next
 * read-back.
 */

type WebGpuDevice = EventTarget & { lost?: Promise<{ message?: string }> };

/** Errors each watched device reported since its last check (kept with the device, not globally). */
const reports = new WeakMap<WebGpuDevice, string[]>();

/** The device of TensorFlow.js's WebGPU backend, once initialised (current or not; read without side effects). */
function webGpuDevice(): WebGpuDevice | undefined {
  return (tf.engine().registry['webgpu'] as { device?: WebGpuDevice } | undefined)?.device;
}

/** Starts recording the WebGPU device's errors (validation, out-of-memory, loss); idempotent. */
export function watchWebGpuDevice(): void {
  const device = webGpuDevice();
  if (!device || reports.has(device)) return;
  const errors: string[] = [];
  reports.set(device, errors);
  device.addEventListener('uncapturederror', (e) => {
    const err = (e as Event & { error?: { message?: string } }).error;
    if (errors.length < 20) errors.push(err?.message?.split('\n')[0] ?? 'unknown device error');
  });
  void device.lost?.then((info) => errors.push(`device lost: ${info.message ?? ''}`));
}

/** Throws FERRY_ERR_DEVICE if the WebGPU device reported an error since the last check. */
export function assertDeviceHealthy(): void {
  const device = webGpuDevice();
  const errors = device ? reports.get(device) : undefined;
  if (!errors || errors.length === 0) return;
  const all = errors.splice(0);
  throw new DeviceError(`the WebGPU device reported ${all.length} error(s); first: ${all[0]}`);
}
