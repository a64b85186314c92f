// Heap accounting for the tests that check what a model holds (the
// replicas' shared weights): bytes the process has allocated and not
// freed, from glibc's mallinfo2 (every arena and the mapped blocks).
#pragma once

#include <cstdint>

#include <malloc.h>

namespace permdnn::testing {

// -1 where mallinfo2 is missing (not glibc, or older than 2.33).
inline int64_t HeapInUse() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 mi = mallinfo2();
  return static_cast<int64_t>(mi.uordblks + mi.hblkhd);
#else
  return -1;
#endif
}

}  // namespace permdnn::testing
