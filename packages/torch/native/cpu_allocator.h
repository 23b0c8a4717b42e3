// A caching CPU allocator for libtorch's tensors (installed once, by the addon's Init).
//
// Training allocates and frees the same large buffers every step (activations, gradients). With
// glibc's malloc they either come from mmap, so each step page-faults them back (a step several
// times slower with a 1 MiB threshold, measured), or from the heap, where buffers of many sizes
// fragment it: ResNet18 224 px training held ~1.5 GB resident for ~0.65 GB of live tensors.
// This keeps large blocks (>= 1 MiB) that a tensor freed and hands them to the next allocation
// they fit (best fit), as PyTorch's CUDA allocator does: a training step's buffers come back from
// the cache (no page faults; measured, ResNet18 224 px: ~0.77 s a step and 1.2 GB peak resident,
// against ~0.9 s and 1.4-1.5 GB on glibc with raised thresholds). The cache is bounded: an
// allocation that misses while the mapped blocks would pass twice the largest live set seen (or
// a floor) first returns the free ones to the kernel, so a changed workload (another image size)
// does not keep the old one's blocks.
#pragma once

#include <cstddef>

namespace ferry {

struct CpuMemoryStats {
  size_t inUseBytes;   // large blocks held by tensors
  size_t cachedBytes;  // large blocks free in the cache
  size_t peakInUseBytes;
  size_t blocks;       // large blocks mapped (in use + cached)
  size_t hits;         // allocations served from the cache
  size_t misses;       // allocations that mapped a new block
};

// Installs the allocator as libtorch's CPU allocator (idempotent). `floorBytes`: free bytes the
// cache may always keep, however small the live set has been.
void installCachingCpuAllocator(size_t floorBytes);
CpuMemoryStats cpuMemoryStats();
// Caps the bytes of large blocks held by tensors (0: no cap); an allocation past it throws
// c10::Error ("out of memory: ..."), which the addon turns into a JavaScript error.
void setCpuMemoryLimit(size_t bytes);

}  // namespace ferry
