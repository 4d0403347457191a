// Plain-text tables and number formatting for terminal output of the study programs.
#pragma once
#include <string>
#include <vector>

namespace mg::report {

// Columns padded to their widest cell, numbers right-aligned, a dashed rule under the header.
// Every row must have as many cells as the header.
std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// True for a number with an optional unit suffix (%, k, M, G, x, s): the cells tables right-align.
bool looks_numeric(const std::string& cell);

std::string fmt(double value, int decimals);  // fixed decimals; "nan" for NaN, "inf"/"-inf"
// Three significant digits with k/M/G suffixes: 0.35, 12.3, 1.2k, 3.4M; "nan" for NaN.
std::string fmt_compact(double value);

}  // namespace mg::report
