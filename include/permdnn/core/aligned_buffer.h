// Owning, 64-byte aligned, uninitialised-by-default arrays.
//
// Every container that a kernel reads from (weights, activations, scratch)
// owns its memory through AlignedBuffer<T>; kernels themselves only ever see
// non-owning std::span views. 64 bytes is one cache line and the widest SIMD
// register (AVX-512), so aligned loads are always legal at index 0.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <type_traits>
#include <utility>

namespace permdnn {

inline constexpr std::size_t kBufferAlignment = 64;

// Zeroed memory of at least `bytes` bytes (a multiple of kBufferAlignment),
// 64-byte aligned; free with std::free. Blocks of 2 MiB and more are 2 MiB
// aligned and, on Linux, asked to be backed by transparent huge pages
// (madvise; a no-op where THP is off). A 4096x4096 p=8 weight matrix spans
// ~2100 4-KiB pages, more than Zen 3's 2048-entry L2 TLB: huge pages took a
// plain L3-resident read from ~60 to ~75 GB/s and the permuted-diagonal
// matvec from ~0.19 to ~0.17 ms (src/kernels/README.md). Throws
// std::bad_alloc.
void* AllocateZeroedAligned(std::size_t bytes);

template <typename T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds PODs only");

 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size) { Resize(size); }
  AlignedBuffer(std::size_t size, T value) {
    Resize(size);
    for (std::size_t i = 0; i < size; ++i) data_[i] = value;
  }
  AlignedBuffer(const AlignedBuffer& other) { *this = other; }
  AlignedBuffer& operator=(const AlignedBuffer& other) {
    if (this != &other) {
      Resize(other.size_);
      if (size_) std::memcpy(data_, other.data_, size_ * sizeof(T));
    }
    return *this;
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      std::free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  ~AlignedBuffer() { std::free(data_); }

  // Resizes without preserving contents when growing past capacity.
  void Resize(std::size_t size) {
    if (size > capacity_) {
      std::free(data_);
      // Round the byte count up to the alignment (aligned_alloc requires it)
      // and leave one extra line so SIMD tails may over-read safely.
      std::size_t bytes = (size * sizeof(T) + 2 * kBufferAlignment - 1) /
                          kBufferAlignment * kBufferAlignment;
      data_ = static_cast<T*>(AllocateZeroedAligned(bytes));
      capacity_ = size;
    }
    size_ = size;
  }
  void Fill(T value) {
    for (std::size_t i = 0; i < size_; ++i) data_[i] = value;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  std::span<T> span() { return {data_, size_}; }
  std::span<const T> span() const { return {data_, size_}; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace permdnn
