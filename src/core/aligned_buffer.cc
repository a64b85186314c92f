#include "permdnn/core/aligned_buffer.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace permdnn {

void* AllocateZeroedAligned(std::size_t bytes) {
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const bool huge = bytes >= kHugePage;
  const std::size_t align = huge ? kHugePage : kBufferAlignment;
  const std::size_t rounded = (bytes + align - 1) / align * align;
  void* data = std::aligned_alloc(align, rounded);
  if (!data) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Before the first touch, so the zeroing below faults in huge pages.
  if (huge) (void)madvise(data, rounded, MADV_HUGEPAGE);
#endif
  std::memset(data, 0, rounded);
  return data;
}

}  // namespace permdnn
