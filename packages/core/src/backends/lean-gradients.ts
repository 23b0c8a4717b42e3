import * as tf from '@tensorflow/tfjs-core';

/**
 * TensorFlow.js's backward pass (tape.ts, `backpropagateGradients`) keeps every activation's
 * gradient and every tensor saved for the backward until the whole backward has run, so a
 * training step's peak holds the saved activations plus a gradient of each: about twice what
 * PyTorch's autograd holds, which frees a node's saved tensors and its outputs' gradients as soon
 * as the node's backward has run. This is the same walk with that release added; nothing else
 * changes (same nodes, same order, same gradient functions, same accumulation), so the gradients
 * are bit-identical to TensorFlow.js's own.
 *
 * Installed on the engine by `installLeanGradients` (idempotent). Higher-order gradients
 * (`gradientDepth > 0`) keep TensorFlow.js's own walk, which they need the tape of.
 *
 * Hand-written because no library offers it: it is a replacement of one engine method (and of
 * its path filter, which tfjs-core does not export from its Node entry point).
 */

/** A recorded op (tfjs-core's TapeNode): `saved` are clones kept for this node's backward alone. */
interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(name: string, f: () => T): T;
  tidy<T extends tf.TensorContainer>(f: () => T): T;
  gradients: GradientsFn;
  leanGradients?: true;
}

type GradientsFn = (
  f: () => tf.Tensor,
  xs: tf.Tensor[],
  dy?: tf.Tensor,
  allowNoGradients?: boolean,
) => { value: tf.Tensor; grads: tf.Tensor[] };

export function installLeanGradients(): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.leanGradients) return;
  const original = engine.gradients.bind(engine);
  engine.gradients = function (f, xs, dy, allowNoGradients = false) {
    if (engine.state.gradientDepth > 0) return original(f, xs, dy, allowNoGradients);
    return leanGradients(engine, f, xs, dy, allowNoGradients);
  };
  engine.leanGradients = true;
}

/**
 * The nodes on a path from xs to y, in tape order, each with only the inputs that depend on xs
 * (tfjs-core's getFilteredNodesXToY).
 */
function pathFromXsToY(tape: readonly TapeNode[], xs: readonly tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set(xs.map((x) => x.id));
  const nodesFromX = new Set<number>();
  for (const node of tape)
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      nodesFromX.add(node.id);
      for (const o of node.outputs) fromX.add(o.id);
    }
  const toY = new Set([y.id]);
  const nodesToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i]!;
    if (!node.outputs.some((o) => toY.has(o.id))) continue;
    nodesToY.add(node.id);
    for (const t of Object.values(node.inputs)) toY.add(t.id);
  }
  return tape
    .filter((n) => nodesFromX.has(n.id) && nodesToY.has(n.id))
    .map((n) => ({
      ...n,
      inputs: Object.fromEntries(Object.entries(n.inputs).filter(([, t]) => fromX.has(t.id))),
    }));
}

function leanGradients(
  engine: EngineInternals,
  f: () => tf.Tensor,
  xs: tf.Tensor[],
  dy: tf.Tensor | undefined,
  allowNoGradients: boolean,
): { value: tf.Tensor; grads: tf.Tensor[] } {
  if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
  if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
  const y = engine.scopedRun(
    () => engine.startTape(),
    () => engine.endTape(),
    () => engine.tidy('forward', f),
  );
  if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
  const tape = engine.state.activeTape ?? [];
  const filtered = pathFromXsToY(tape, xs, y);
  if (!allowNoGradients && filtered.length === 0)
    throw new Error(
      'Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.',
    );
  return engine.tidy('backward', () => {
    const wanted = new Set(xs.map((x) => x.id));
    const grads = new Map<number, tf.Tensor>([[y.id, dy ?? tf.ones(y.shape)]]);
    // Nodes off the path from xs to y are never walked: what they saved is not needed.
    const onPath = new Set(filtered.map((n) => n.id));
    for (const node of tape) if (!onPath.has(node.id)) for (const t of node.saved ?? []) t.dispose();
    for (let i = filtered.length - 1; i >= 0; i--) {
      const node = filtered[i]!;
      const dys = node.outputs.map((o) => grads.get(o.id) ?? null);
      if (node.gradient == null)
        throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      const inputGradients = node.gradient(dys as tf.Tensor[]);
      const made = new Set<tf.Tensor>();
      for (const inputName in node.inputs) {
        const gradient = inputGradients[inputName];
        if (!gradient)
          throw new Error(
            `Cannot backprop through input ${inputName}. Available gradients found: ${Object.keys(inputGradients).join(',')}.`,
          );
        const dx = engine.tidy(gradient);
        if (dx.dtype !== 'float32')
          throw new Error(
            `Error in gradient for op ${node.kernelName}. The gradient of input ${inputName} must have 'float32' dtype, but has '${dx.dtype}'`,
          );
        const x = node.inputs[inputName]!;
        if (!tf.util.arraysEqual(dx.shape, x.shape))
          throw new Error(
            `Error in gradient for op ${node.kernelName}. The gradient of input '${inputName}' has shape '${dx.shape.join(',')}', which does not match the shape of the input '${x.shape.join(',')}'`,
          );
        made.add(dx);
        const current = grads.get(x.id);
        if (current === undefined) grads.set(x.id, dx);
        else {
          grads.set(x.id, tf.add(current, dx));
          current.dispose();
          if (!dys.includes(dx) && !(node.saved ?? []).includes(dx)) dx.dispose();
        }
      }
      // This node's backward has run: what it saved, and its outputs' gradients, are spent
      // (no other node feeds them; a gradient function that handed one back as its dx keeps it).
      for (const t of node.saved ?? []) if (!made.has(t)) t.dispose();
      node.outputs.forEach((o, k) => {
        const g = dys[k];
        if (g == null || wanted.has(o.id) || made.has(g) || g === dy) return;
        g.dispose();
        grads.delete(o.id);
      });
    }
    const result = xs.map((x) => grads.get(x.id)!);
    for (const node of tape) for (const t of node.saved ?? []) t.dispose();
    engine.state.activeTape = null;
    return { value: y, grads: result };
  });
}
