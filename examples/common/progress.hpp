// A one-line progress bar for the example programs, in the spirit of tqdm:
//   epoch 3/10 [=====>    ] 234/469 51% 12.3s<ETA 11.8s | loss 0.412 acc 85.1% 2310 img/s
// On a terminal it redraws one line with '\r' at most ~10 times per second; when the stream is not
// a terminal (CI logs, files) it prints a plain line at every 10% instead, so logs stay short.
#pragma once
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace mg::report {

// Printed as "name value"; an empty name prints the value alone (e.g. {"", "2310 img/s"}).
using Fields = std::vector<std::pair<std::string, std::string>>;

class ProgressBar {
 public:
  // total: steps of this bar (0 is allowed: an empty epoch). out: nullptr writes to std::cerr and
  // redraws in place when stderr is a terminal; a stream passed in always gets plain lines.
  ProgressBar(std::string label, int64_t total, std::ostream* out = nullptr);
  ~ProgressBar();  // ends a half-drawn terminal line, so an exception's message starts on its own line
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // done = steps finished; fields are printed after the bar, in order
  void update(int64_t done, const Fields& fields = {});
  void finish(const Fields& fields = {});  // final line + newline (done = total)
  // A message (a warning, an evaluation result) on a line of its own while the bar runs: on a
  // terminal the bar is cleared, the message printed and the bar drawn again below it.
  void write(const std::string& message);

  double elapsed_seconds() const;  // since construction; for rates such as "img/s"
  // The line as it would be drawn now (without '\r' or '\n'); what update() prints.
  std::string line(int64_t done, const Fields& fields) const;

 private:
  void draw(int64_t done, const Fields& fields, bool final_line);

  std::string label_;
  int64_t total_;
  std::ostream* out_;
  bool terminal_;
  bool line_open_ = false;         // a terminal line is drawn without its newline yet
  int64_t last_decile_ = 0;        // plain mode: the last 10% mark printed
  int64_t last_done_ = 0;          // what the terminal line shows, to redraw it after write()
  Fields last_fields_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "0.3s", "12.3s", "1m05s", "2h03m"; "?" for negative or non-finite input.
std::string format_duration(double seconds);

}  // namespace mg::report
