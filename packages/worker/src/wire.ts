import type { CellResult as EngineResult, EpochMetrics as EngineMetrics } from '@ferry/core';
import { CellResult, EpochMetrics } from '@ferry/protocol';

/*
 * The engine's results as the wire messages the worker reports (ferry.v1 EpochMetrics and
 * CellResult). Non-finite numbers (a class absent from val has no accuracy: NaN) travel as 0,
 * as proto3 JSON would not carry them.
 */

const finite = (v: number): number => (Number.isFinite(v) ? v : 0);
const rows = (m: readonly (readonly number[])[]): { counts: number[] }[] => m.map((r) => ({ counts: [...r] }));

export function wireMetrics(m: EngineMetrics): EpochMetrics {
  return EpochMetrics.fromPartial({
    ...m,
    confusion: rows(m.confusion),
    perClassAccuracy: m.perClassAccuracy.map(finite),
  });
}

export function wireResult(r: EngineResult): CellResult {
  return CellResult.fromPartial({
    classes: [...r.classes],
    trainImages: r.trainImages,
    valImages: r.valImages,
    epochs: r.epochs.map(wireMetrics),
    bestValAccuracy: r.bestValAccuracy,
    bestEpoch: r.bestEpoch,
    confusion: rows(r.confusion),
    perClassAccuracy: r.perClassAccuracy.map(finite),
    valPredictions: [...r.valPredictions],
    valLabels: [...r.valLabels],
    valSetHash: r.valSetHash,
    skipped: r.skipped.map((f) => ({ file: f.file, reason: f.reason })),
    wallMs: r.wallMs,
    imagesPerSec: r.imagesPerSec,
    featureCache: r.featureCache,
    backend: r.backend,
    device: r.device,
    resumedFromEpoch: r.resumedFromEpoch,
    finishedAt: r.finishedAt,
  });
}
