// A readable line diff for test failure messages.
#pragma once

#include <string>
#include <string_view>

namespace epollcr::replay::testing {

// Lines only in `expected` start with "-", lines only in `actual` with "+", common lines with " ". Runs of more than
// `context` common lines between changes are elided. Empty when the texts are equal.
std::string LineDiff(std::string_view expected, std::string_view actual, int context = 3);

}  // namespace epollcr::replay::testing
