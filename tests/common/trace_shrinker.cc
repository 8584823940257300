#include "trace_shrinker.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "replay/kernel_engine.h"
#include "replay/runner.h"
#include "replay/trace_parser.h"

namespace epollcr::replay {
namespace {

std::string Join(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

// Lines [begin, end) of `lines`, or all but those.
std::vector<std::string> Slice(const std::vector<std::string>& lines, std::size_t begin, std::size_t end,
                               bool complement) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if ((i >= begin && i < end) != complement) out.push_back(lines[i]);
  }
  return out;
}

}  // namespace

std::string ShrinkResult::Text() const { return Join(lines); }

std::vector<std::string> OperationLines(std::string_view text) {
  std::vector<std::string> lines;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    lines.push_back(line);
  }
  return lines;
}

ShrinkResult ShrinkTrace(std::string_view text, const FailurePredicate& fails, const ShrinkOptions& options) {
  ShrinkResult result;
  std::vector<std::string> lines = OperationLines(text);
  result.lines = lines;
  if (!ParseTrace(Join(lines), "shrink.trace").ok()) return result;

  // Each candidate is judged once: ddmin comes back to the same ones.
  std::map<std::string, bool> judged;
  bool exhausted = false;
  auto still_fails = [&](const std::vector<std::string>& candidate) {
    const std::string candidate_text = Join(candidate);
    if (auto it = judged.find(candidate_text); it != judged.end()) return it->second;
    bool failing = false;
    Result<Trace> parsed = ParseTrace(candidate_text, "shrink.trace");
    if (!parsed.ok()) {
      ++result.unparsable;
    } else if (result.tests >= options.max_tests) {
      exhausted = true;
      return false;
    } else {
      ++result.tests;
      failing = fails(candidate_text, parsed.value());
    }
    judged.emplace(candidate_text, failing);
    return failing;
  };

  // ddmin: n chunks; a chunk that fails alone replaces the whole (n back to 2); else a complement that fails
  // (one chunk fewer); else finer chunks, until they are single lines.
  std::size_t n = 2;
  while (lines.size() >= 2 && !exhausted) {
    const std::size_t size = lines.size();
    n = std::min(n, size);
    bool reduced = false;
    for (bool complement : {false, true}) {
      for (std::size_t i = 0; i < n && !reduced && !exhausted; ++i) {
        std::vector<std::string> candidate = Slice(lines, i * size / n, (i + 1) * size / n, complement);
        if (!still_fails(candidate)) continue;
        lines = std::move(candidate);
        n = complement ? std::max<std::size_t>(n - 1, 2) : 2;
        reduced = true;
      }
      if (reduced) break;
    }
    if (reduced) continue;
    if (n >= size) {
      result.minimal = true;
      break;
    }
    n = std::min(n * 2, size);
  }
  if (lines.size() <= 1 && !exhausted) {
    if (!lines.empty() && still_fails({})) lines.clear();
    result.minimal = !exhausted;
  }
  result.lines = std::move(lines);
  return result;
}

RegressionTrace MakeRegressionTrace(const std::string& name, const std::string& comment,
                                    const std::vector<std::string>& lines, std::string* error) {
  RegressionTrace regression;
  regression.name = name;
  regression.trace = "# " + comment + "\n" + Join(lines);
  Result<Trace> parsed = ParseTrace(regression.trace, name + ".trace");
  if (!parsed.ok()) {
    *error = parsed.status().message;
    return regression;
  }
  KernelEngine kernel;
  std::ostringstream out;
  RunReport report = RunTrace(parsed.value(), kernel, out);
  if (!report.ok()) *error = report.error;
  regression.expected = out.str();
  return regression;
}

bool WriteRegressionTrace(const std::string& dir, const RegressionTrace& regression, std::string* reason) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    *reason = dir + ": " + error.message();
    return false;
  }
  for (const auto& [extension, text] : {std::pair{".trace", &regression.trace}, {".expected", &regression.expected}}) {
    const std::string path = dir + "/" + regression.name + extension;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << *text;
    out.close();
    if (!out) {
      *reason = path + ": write failed";
      return false;
    }
  }
  return true;
}

}  // namespace epollcr::replay
