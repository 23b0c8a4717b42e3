// Stand-in for `sharp` in the GPU benchmark bundles: the GPU machine has no npm packages, and the
// benchmarks feed tensors, never image files. Any decode there is a mistake, and says so.
export default function sharp() {
  throw new Error('sharp is not part of the GPU benchmark bundle (bench/gpu/prepare.sh)');
}
