// Sparse (CSR / CSC) products: reference, Highway SIMD, int16.
//
// CSR·x: per row, N nonzeros at a time: the column indices are loaded as a
// vector and x is gathered (AVX2 vgatherdps); values are contiguous. Reads
// never pass row_ptr[r + 1]: the tail is scalar.
// CSR·X (feature-major): each nonzero is a broadcast times a contiguous row of
// X, accumulated over up to 4 vectors of the batch.
// CSC column-wise: scalar scatter-add into y for every nonzero input.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/kernels/sparse_simd.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <vector>

#include "permdnn/core/error.h"
#include "permdnn/core/thread_pool.h"
#include "permdnn/kernels/dispatch.h"
#include "permdnn/kernels/sparse.h"
#include "src/kernels/table_internal.h"

HWY_BEFORE_NAMESPACE();
namespace permdnn::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void CsrRowsImpl(const int32_t* row_ptr, const int32_t* col_idx, const float* values, const float* x,
                 const float* bias, float* y, int64_t r0, int64_t r1) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = r0; r < r1; ++r) {
    int64_t e = row_ptr[r];
    const int64_t end = row_ptr[r + 1];
    auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
    for (; e + 2 * N <= end; e += 2 * N) {
      acc0 = hn::MulAdd(hn::LoadU(d, values + e), hn::GatherIndex(d, x, hn::LoadU(di, col_idx + e)), acc0);
      acc1 = hn::MulAdd(hn::LoadU(d, values + e + N), hn::GatherIndex(d, x, hn::LoadU(di, col_idx + e + N)), acc1);
    }
    float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
    for (; e < end; ++e) sum += values[e] * x[col_idx[e]];
    y[r] = sum + (bias ? bias[r] : 0.0f);
  }
}

void CsrMatMulRowsImpl(const int32_t* row_ptr, const int32_t* col_idx, const float* values, const float* x,
                       int64_t batch, const float* bias, float* y, int64_t r0, int64_t r1) {
  const hn::ScalableTag<float> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = r0; r < r1; ++r) {
    float* yr = y + r * batch;
    const float b = bias ? bias[r] : 0.0f;
    int64_t b0 = 0;
    for (; b0 + 4 * N <= batch; b0 += 4 * N) {
      auto a0 = hn::Set(d, b), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e) {
        const auto v = hn::Set(d, values[e]);
        const float* xr = x + int64_t{col_idx[e]} * batch + b0;
        a0 = hn::MulAdd(v, hn::LoadU(d, xr), a0);
        a1 = hn::MulAdd(v, hn::LoadU(d, xr + N), a1);
        a2 = hn::MulAdd(v, hn::LoadU(d, xr + 2 * N), a2);
        a3 = hn::MulAdd(v, hn::LoadU(d, xr + 3 * N), a3);
      }
      hn::StoreU(a0, d, yr + b0);
      hn::StoreU(a1, d, yr + b0 + N);
      hn::StoreU(a2, d, yr + b0 + 2 * N);
      hn::StoreU(a3, d, yr + b0 + 3 * N);
    }
    for (; b0 + N <= batch; b0 += N) {
      auto a = hn::Set(d, b);
      for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e)
        a = hn::MulAdd(hn::Set(d, values[e]), hn::LoadU(d, x + int64_t{col_idx[e]} * batch + b0), a);
      hn::StoreU(a, d, yr + b0);
    }
    for (; b0 < batch; ++b0) {
      float a = b;
      for (int64_t e = row_ptr[r]; e < row_ptr[r + 1]; ++e) a += values[e] * x[int64_t{col_idx[e]} * batch + b0];
      yr[b0] = a;
    }
  }
}

// This file's part of the kernel table: one SIMD row per op.
void SparseTableImpl(std::vector<KernelRow>* out) {
  out->push_back({"csr.matvec.gather", KernelOp::kCsrMatVec, "", detail::AdmitsAll});
  out->push_back({"csr.matmul.broadcast", KernelOp::kCsrMatMul, "", detail::AdmitsAll});
}
const char* SparseSelectImpl(const KernelProblem& q) {
  if (q.op == KernelOp::kCsrMatVec) return "csr.matvec.gather";
  if (q.op == KernelOp::kCsrMatMul) return "csr.matmul.broadcast";
  return nullptr;
}

}  // namespace permdnn::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace permdnn::kernels {
HWY_EXPORT(CsrRowsImpl);
HWY_EXPORT(CsrMatMulRowsImpl);
PERMDNN_EXPORT_KERNEL_TABLE(Sparse, SparseTableImpl, SparseSelectImpl)

namespace {
void CheckCommon(const char* op, int64_t rows, std::span<const float> bias, std::size_t y_size, int64_t y_expected) {
  PERMDNN_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == rows,
                "{}: bias has {} entries, expected 0 or {} (rows)", op, bias.size(), rows);
  PERMDNN_CHECK(static_cast<int64_t>(y_size) == y_expected, "{}: output has {} entries, expected {}", op, y_size,
                y_expected);
}
}  // namespace

namespace ref {
void CsrMatVec(const CsrMatrix& a, const float* x, const float* bias, float* y) {
  for (int64_t r = 0; r < a.rows(); ++r) {
    double acc = bias ? bias[r] : 0.0;
    for (int64_t e = a.row_ptr()[r]; e < a.row_ptr()[r + 1]; ++e)
      acc += static_cast<double>(a.values()[e]) * x[a.col_idx()[e]];
    y[r] = static_cast<float>(acc);
  }
}
void CsrMatMul(const CsrMatrix& a, const float* x, int64_t batch, const float* bias, float* y) {
  std::vector<double> acc(static_cast<std::size_t>(batch));
  for (int64_t r = 0; r < a.rows(); ++r) {
    std::fill(acc.begin(), acc.end(), bias ? bias[r] : 0.0);
    for (int64_t e = a.row_ptr()[r]; e < a.row_ptr()[r + 1]; ++e)
      for (int64_t b = 0; b < batch; ++b)
        acc[b] += static_cast<double>(a.values()[e]) * x[int64_t{a.col_idx()[e]} * batch + b];
    for (int64_t b = 0; b < batch; ++b) y[r * batch + b] = static_cast<float>(acc[b]);
  }
}
}  // namespace ref

void CsrMatVec(const CsrMatrix& a, std::span<const float> x, std::span<const float> bias, std::span<float> y,
               int threads) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == a.cols(), "CsrMatVec: x has {} entries, expected {}", x.size(),
                a.cols());
  CheckCommon("CsrMatVec", a.rows(), bias, y.size(), a.rows());
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kCsrMatVec)) return ref::CsrMatVec(a, x.data(), b, y.data());
  ParallelFor(a.rows(), threads, [&](int64_t r0, int64_t r1, int) {
    HWY_DYNAMIC_DISPATCH(CsrRowsImpl)(a.row_ptr().data(), a.col_idx().data(), a.values().data(), x.data(), b,
                                      y.data(), r0, r1);
  });
}

void CsrMatMul(const CsrMatrix& a, std::span<const float> x, int64_t batch, std::span<const float> bias,
               std::span<float> y, int threads) {
  PERMDNN_CHECK(batch >= 1, "CsrMatMul: batch must be >= 1, got {}", batch);
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == a.cols() * batch, "CsrMatMul: X has {} entries, expected {}",
                x.size(), a.cols() * batch);
  CheckCommon("CsrMatMul", a.rows(), bias, y.size(), a.rows() * batch);
  const float* b = bias.empty() ? nullptr : bias.data();
  if (detail::UseReference(KernelOp::kCsrMatMul)) return ref::CsrMatMul(a, x.data(), batch, b, y.data());
  ParallelFor(a.rows(), threads, [&](int64_t r0, int64_t r1, int) {
    HWY_DYNAMIC_DISPATCH(CsrMatMulRowsImpl)(a.row_ptr().data(), a.col_idx().data(), a.values().data(), x.data(),
                                            batch, b, y.data(), r0, r1);
  });
}

void CscMatVecSparseInput(const CscMatrix& a, std::span<const float> x, std::span<const float> bias,
                          std::span<float> y) {
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == a.cols(), "CscMatVecSparseInput: x has {} entries, expected {}",
                x.size(), a.cols());
  CheckCommon("CscMatVecSparseInput", a.rows(), bias, y.size(), a.rows());
  for (int64_t r = 0; r < a.rows(); ++r) y[r] = bias.empty() ? 0.0f : bias[r];
  const int32_t* cp = a.col_ptr().data();
  const int32_t* ri = a.row_idx().data();
  const float* v = a.values().data();
  for (int64_t j = 0; j < a.cols(); ++j) {
    const float xj = x[j];
    if (xj == 0.0f) continue;
    for (int64_t e = cp[j]; e < cp[j + 1]; ++e) y[ri[e]] += v[e] * xj;
  }
}

void CsrMatVecI16Acc(const CsrMatrix& a, std::span<const int16_t> values, std::span<const int16_t> x,
                     std::span<int64_t> acc) {
  PERMDNN_CHECK(static_cast<int64_t>(values.size()) == a.nnz(), "CsrMatVecI16Acc: {} int16 values for {} nonzeros",
                values.size(), a.nnz());
  PERMDNN_CHECK(static_cast<int64_t>(x.size()) == a.cols() && static_cast<int64_t>(acc.size()) == a.rows(),
                "CsrMatVecI16Acc: x must have {} and acc {} entries", a.cols(), a.rows());
  for (int64_t r = 0; r < a.rows(); ++r) {
    int64_t s = 0;
    for (int64_t e = a.row_ptr()[r]; e < a.row_ptr()[r + 1]; ++e) s += int64_t{values[e]} * x[a.col_idx()[e]];
    acc[r] = s;
  }
}

}  // namespace permdnn::kernels
#endif
