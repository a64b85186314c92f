// Progress line (see progress.h).
#include "permdnn/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace permdnn {

bool Progress::IsTerminal() { return isatty(STDERR_FILENO) == 1; }

Progress::Progress(int64_t total, std::string unit, bool enabled)
    : total_(total), unit_(std::move(unit)), enabled_(enabled), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { Finish(); }

void Progress::Update(int64_t done, const std::string& detail) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done / elapsed : 0;
  std::string eta = "--";
  if (rate > 0 && total_ > done) {
    int s = static_cast<int>((total_ - done) / rate);
    eta = s >= 60 ? fmt::format("{}m{:02}s", s / 60, s % 60) : fmt::format("{}s", s);
  }
  std::string line = fmt::format("[{}/{} {}] {:.2f} {}/s  ETA {}  {}", done, total_, unit_, rate, unit_,
                                 eta, detail);
  if (line.size() > 120) line.resize(120);
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::Finish() {
  if (enabled_ && drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

}  // namespace permdnn
