// C++17 (+ OpenMP) gathered reductions. See include/pyred/reductions.h.
#include "pyred/reductions.h"

#include <algorithm>
#include <vector>

namespace pyred {

Status check_index_lists(const IndexLists& lists, int64_t d, const char* name) {
  if (lists.num_lists < 0 || lists.nnz < 0)
    return Status::Error(std::string(name) + ": negative list count or length");
  if (lists.offsets == nullptr) return Status::Error(std::string(name) + ": offsets is null");
  if (lists.nnz > 0 && lists.indices == nullptr)
    return Status::Error(std::string(name) + ": indices is null");
  if (lists.offsets[0] != 0)
    return Status::Error(std::string(name) + ": offsets[0] must be 0", true);
  if (lists.offsets[lists.num_lists] != lists.nnz)
    return Status::Error(std::string(name) + ": offsets[-1] must equal the number of indices (" +
                             std::to_string(lists.nnz) + "), got " +
                             std::to_string(lists.offsets[lists.num_lists]),
                         true);
  for (int64_t k = 0; k < lists.num_lists; ++k) {
    if (lists.offsets[k + 1] < lists.offsets[k])
      return Status::Error(std::string(name) + ": offsets must be non-decreasing (at list " +
                               std::to_string(k) + ")",
                           true);
  }
  for (int64_t p = 0; p < lists.nnz; ++p) {
    const int64_t i = lists.indices[p];
    if (i < 0 || i >= d)
      return Status::Error(std::string(name) + ": index " + std::to_string(i) + " at position " +
                               std::to_string(p) + " is outside [0, " + std::to_string(d) + ")",
                           true);
  }
  return Status::Ok();
}

namespace {

template <typename T>
void segment_sums_impl(const T* values, int64_t M, int64_t d, const IndexLists& L, double* out) {
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t k = 0; k < L.num_lists; ++k) {
    const int64_t* idx = L.indices + L.offsets[k];
    const int64_t len = L.offsets[k + 1] - L.offsets[k];
    for (int64_t m = 0; m < M; ++m) {
      const T* v = values + m * d;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t p = 0;
      for (; p + 4 <= len; p += 4) {
        s0 += v[idx[p]];
        s1 += v[idx[p + 1]];
        s2 += v[idx[p + 2]];
        s3 += v[idx[p + 3]];
      }
      for (; p < len; ++p) s0 += v[idx[p]];
      out[k * M + m] = (s0 + s1) + (s2 + s3);
    }
  }
}

// One unit of work: rows [row_begin, row_end) of list k.
struct Task {
  int64_t k, row_begin, row_end;
};

// Sum of row[cols[q]] for q in [0, len): four accumulators for ILP.
template <typename T>
inline double gather_row_sum(const T* row, const int64_t* cols, int64_t len) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t q = 0;
  for (; q + 4 <= len; q += 4) {
    s0 += row[cols[q]];
    s1 += row[cols[q + 1]];
    s2 += row[cols[q + 2]];
    s3 += row[cols[q + 3]];
  }
  for (; q < len; ++q) s0 += row[cols[q]];
  return (s0 + s1) + (s2 + s3);
}

template <typename T>
void block_sums_impl(const T* mats, int64_t M, int64_t d, const IndexLists& R, const IndexLists& C,
                     double* out) {
  const int64_t K = R.num_lists;
  // Split long row lists into blocks so that threads stay busy when list sizes
  // are very uneven (the paper's grids mix k = 1 with k = 2048). A task is
  // about 64k gathered reads.
  std::vector<Task> tasks;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t nr = R.offsets[k + 1] - R.offsets[k];
    const int64_t nc = C.offsets[k + 1] - C.offsets[k];
    if (nr == 0 || nc == 0) continue;
    const int64_t rows_per_task = std::max<int64_t>(1, (int64_t{1} << 16) / (nc * M));
    for (int64_t r = 0; r < nr; r += rows_per_task)
      tasks.push_back({k, r, std::min(nr, r + rows_per_task)});
  }
  std::vector<double> partial(tasks.size() * static_cast<size_t>(M), 0.0);
  const int64_t T_count = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < T_count; ++t) {
    const Task task = tasks[t];
    const int64_t* rows = R.indices + R.offsets[task.k];
    const int64_t* cols = C.indices + C.offsets[task.k];
    const int64_t nc = C.offsets[task.k + 1] - C.offsets[task.k];
    for (int64_t m = 0; m < M; ++m) {
      const T* A = mats + m * d * d;
      double s = 0;
      for (int64_t r = task.row_begin; r < task.row_end; ++r) s += gather_row_sum(A + rows[r] * d, cols, nc);
      partial[t * M + m] = s;
    }
  }
  // Deterministic reduction: tasks of one list are contiguous and in order.
  std::fill(out, out + K * M, 0.0);
  for (int64_t t = 0; t < T_count; ++t)
    for (int64_t m = 0; m < M; ++m) out[tasks[t].k * M + m] += partial[t * M + m];
}

}  // namespace

Status segment_sums_cpu(const void* values, DType dtype, int64_t M, int64_t d, const IndexLists& lists,
                        double* out) {
  if (dtype == DType::Float32)
    segment_sums_impl(static_cast<const float*>(values), M, d, lists, out);
  else
    segment_sums_impl(static_cast<const double*>(values), M, d, lists, out);
  return Status::Ok();
}

Status block_sums_cpu(const void* mats, DType dtype, int64_t M, int64_t d, const IndexLists& rows,
                      const IndexLists& cols, double* out) {
  if (dtype == DType::Float32)
    block_sums_impl(static_cast<const float*>(mats), M, d, rows, cols, out);
  else
    block_sums_impl(static_cast<const double*>(mats), M, d, rows, cols, out);
  return Status::Ok();
}

}  // namespace pyred
