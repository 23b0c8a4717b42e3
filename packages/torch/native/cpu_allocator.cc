#include "cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <sys/mman.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace ferry {
namespace {

// Below this, glibc's heap serves allocations well (and they are most of the calls).
constexpr size_t kMinCached = 1 << 20;
// Sizes are rounded up to this, so that buffers of nearly one size (a last, smaller batch) share
// blocks; at most 1/16 of a block is slack.
size_t roundUp(size_t n) {
  size_t unit = 64 * 1024;
  while (unit * 16 < n) unit *= 2;
  return (n + unit - 1) / unit * unit;
}

// A free block serves a request up to this much smaller (best fit): fewer blocks mapped for
// the buffers of many sizes one step frees and asks for again (ResNet18 224 px training: 820 MB
// mapped instead of 960 MB, at the same speed).
constexpr double kFitSlack = 1.5;

struct Block {
  void* ptr;
  size_t size;
};

class Cache {
 public:
  Block* take(size_t n) {
    const size_t size = roundUp(n);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The user's cap on tensor memory (a worker sharing its machine): an allocation past it
      // fails as an out-of-memory would, before anything is mapped, naming the figures.
      TORCH_CHECK(limit_ == 0 || inUse_ + size <= limit_, "out of memory: ", size >> 20, " MiB more would pass the torch backend's limit of ",
                  limit_ >> 20, " MiB (", inUse_ >> 20, " MiB held by tensors)");
      // Best fit: the smallest free block that holds `size`, if at most kFitSlack times it.
      auto it = free_.lower_bound(size);
      while (it != free_.end() && it->second.empty()) it = free_.erase(it);
      if (it != free_.end() && static_cast<double>(it->first) <= static_cast<double>(size) * kFitSlack) {
        Block* b = it->second.back();
        it->second.pop_back();
        inUseBlocks_[b->ptr] = b;
        cached_ -= b->size;
        inUse_ += b->size;
        peakInUse_ = std::max(peakInUse_, inUse_);
        hits_++;
        return b;
      }
      misses_++;
      // Mapping past the largest live set seen (and a quarter) means the workload changed
      // (another image size, another batch): give the free blocks of the old one back rather
      // than hold two working sets.
      if (inUse_ + cached_ + size > std::max(floor_, 4 * peakInUse_)) releaseLocked();
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      // Out of address space or memory: give back what the cache holds and try once more.
      emptyCache();
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      TORCH_CHECK(p != MAP_FAILED, "out of memory: could not allocate ", size, " bytes");
    }
    std::lock_guard<std::mutex> lock(mu_);
    inUse_ += size;
    peakInUse_ = std::max(peakInUse_, inUse_);
    blocks_++;
    Block* b = new Block{p, size};
    inUseBlocks_[p] = b;
    return b;
  }

  // Takes back the block at `p`; false when `p` is not one (a small allocation).
  bool give(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = inUseBlocks_.find(p);
    if (it == inUseBlocks_.end()) return false;
    Block* b = it->second;
    inUseBlocks_.erase(it);
    inUse_ -= b->size;
    cached_ += b->size;
    free_[b->size].push_back(b);
    return true;
  }

  void emptyCache() {
    std::lock_guard<std::mutex> lock(mu_);
    releaseLocked();
  }

  void setLimit(size_t limit) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = limit;
  }

  void setFloor(size_t floor) {
    std::lock_guard<std::mutex> lock(mu_);
    floor_ = floor;
  }

  CpuMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {inUse_, cached_, peakInUse_, blocks_, hits_, misses_};
  }

 private:
  void releaseLocked() {
    for (auto& [size, list] : free_) {
      for (Block* b : list) {
        munmap(b->ptr, b->size);
        delete b;
        blocks_--;
      }
      list.clear();
    }
    cached_ = 0;
  }

  std::mutex mu_;
  std::map<size_t, std::vector<Block*>> free_;
  std::unordered_map<void*, Block*> inUseBlocks_;
  size_t floor_ = 0;
  size_t limit_ = 0;
  size_t inUse_ = 0;
  size_t peakInUse_ = 0;
  size_t cached_ = 0;
  size_t blocks_ = 0;
  size_t hits_ = 0;
  size_t misses_ = 0;
};

// Never destroyed: tensors freed during process exit still find it.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

// One deleter for both kinds, keyed by the pointer: oneDNN allocates through raw_allocate, which
// requires the context to be the data pointer and a raw deleter.
void deleteAny(void* p) {
  if (!cache().give(p)) c10::free_cpu(p);
}

class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = n < kMinCached ? c10::alloc_cpu(n) : cache().take(n)->ptr;
    return {p, p, &deleteAny, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &deleteAny; }
};

}  // namespace

void installCachingCpuAllocator(size_t floorBytes) {
  static CachingCpuAllocator* allocator = new CachingCpuAllocator();
  static bool installed = false;
  cache().setFloor(floorBytes);
  if (installed) return;
  // Above the default allocator's priority (0), so libtorch's empty tensors come from here.
  c10::SetCPUAllocator(allocator, 1);
  installed = true;
}

CpuMemoryStats cpuMemoryStats() { return cache().stats(); }

void setCpuMemoryLimit(size_t bytes) { cache().setLimit(bytes); }


}  // namespace ferry
