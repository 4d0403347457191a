// The progress bar: one line rebuilt from (done, total, elapsed time, fields) at every draw. On a
// terminal the line is redrawn in place with '\r' and "erase to end of line" (ESC [K), cut to the
// terminal's width so it never wraps (a wrapped line cannot be redrawn); elsewhere plain lines at
// every 10% keep CI logs short.
#include "examples/common/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "engine/error.hpp"

namespace mg::report {
namespace {

constexpr int kBarWidth = 24;
constexpr double kRedrawSeconds = 0.1;  // at most ~10 redraws per second on a terminal

bool stderr_is_terminal() {
  const char* term = std::getenv("TERM");
  return isatty(STDERR_FILENO) == 1 && !(term != nullptr && std::strcmp(term, "dumb") == 0);
}

std::size_t terminal_columns() {
  winsize size{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 120;
}

}  // namespace

ProgressBar::ProgressBar(std::string label, int64_t total, std::ostream* out)
    : label_(std::move(label)),
      total_(total),
      out_(out != nullptr ? out : &std::cerr),
      terminal_(out == nullptr && stderr_is_terminal()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  MG_CHECK(total >= 0, "ProgressBar '", label_, "': total must be >= 0, got ", total);
}

ProgressBar::~ProgressBar() {
  if (line_open_) *out_ << '\n' << std::flush;
}

double ProgressBar::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string ProgressBar::line(int64_t done, const Fields& fields) const {
  done = std::clamp<int64_t>(done, 0, total_);
  const double fraction = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const int filled = static_cast<int>(fraction * kBarWidth);
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < kBarWidth) bar += done > 0 ? ">" : " ";
  bar.resize(kBarWidth, ' ');

  const double elapsed = elapsed_seconds();
  std::string text = label_.empty() ? "" : label_ + " ";
  text += "[" + bar + "] " + std::to_string(done) + "/" + std::to_string(total_) + " " +
          std::to_string(static_cast<int>(std::floor(fraction * 100.0))) + "% " + format_duration(elapsed);
  if (done < total_) {
    // Linear extrapolation from the steps so far; unknown until the first step has finished.
    const double eta = done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : NAN;
    text += "<ETA " + format_duration(eta);
  }
  if (!fields.empty()) {
    text += " |";
    for (const auto& [name, value] : fields) text += name.empty() ? " " + value : " " + name + " " + value;
  }
  return text;
}

void ProgressBar::update(int64_t done, const Fields& fields) {
  if (terminal_) {
    const auto now = std::chrono::steady_clock::now();
    if (line_open_ && std::chrono::duration<double>(now - last_draw_).count() < kRedrawSeconds) return;
    last_draw_ = now;
    draw(done, fields, false);
    return;
  }
  // Plain lines at 10%, 20%, ... 90%; 100% is finish()'s line.
  const int64_t decile = total_ > 0 ? std::clamp<int64_t>(done, 0, total_) * 10 / total_ : 10;
  if (decile > last_decile_ && decile < 10) draw(done, fields, false);
  last_decile_ = std::max(last_decile_, decile);
}

void ProgressBar::finish(const Fields& fields) { draw(total_, fields, true); }

void ProgressBar::write(const std::string& message) {
  if (!line_open_) {
    *out_ << message << '\n' << std::flush;
    return;
  }
  *out_ << "\r\x1b[K" << message << '\n';
  draw(last_done_, last_fields_, false);
}

void ProgressBar::draw(int64_t done, const Fields& fields, bool final_line) {
  std::string text = line(done, fields);
  if (terminal_) {
    last_done_ = done;
    last_fields_ = fields;
    const std::size_t columns = terminal_columns();
    if (text.size() >= columns) text.resize(columns - 1);
    *out_ << '\r' << text << "\x1b[K";
    line_open_ = !final_line;
    if (final_line) *out_ << '\n';
  } else {
    *out_ << text << '\n';
  }
  out_->flush();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buffer[32];
  if (std::round(seconds * 10.0) < 600.0) {
    std::snprintf(buffer, sizeof buffer, "%.1fs", seconds);
    return buffer;
  }
  const auto whole_seconds = static_cast<long long>(std::llround(seconds));
  if (whole_seconds < 3600) {
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", whole_seconds / 60, whole_seconds % 60);
  } else {
    const long long whole_minutes = (whole_seconds + 30) / 60;
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", whole_minutes / 60, whole_minutes % 60);
  }
  return buffer;
}

}  // namespace mg::report
