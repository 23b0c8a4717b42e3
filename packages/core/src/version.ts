import * as tf from '@tensorflow/tfjs-core';

/** The TensorFlow.js core version ferry runs on. */
export const tfjsVersion: string = tf.version_core;
