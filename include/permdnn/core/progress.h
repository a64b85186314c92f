// A one-line progress display for long work (benchmarks, training, sweeps).
//
// On a terminal it redraws "label  done/total  rate  ETA" on stderr at most
// ten times a second; when stderr is not a terminal (pipes, CI logs) it stays
// silent, so logs hold results rather than carriage returns.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace permdnn {

class Progress {
 public:
  // unit names what is counted ("runs", "batches").
  Progress(int64_t total, std::string unit, bool enabled = IsTerminal());
  ~Progress();

  // Sets the count and the text shown after it.
  void Update(int64_t done, const std::string& detail = "");
  // Erases the line (call before printing results).
  void Finish();

  static bool IsTerminal();

 private:
  int64_t total_;
  std::string unit_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace permdnn
