// Markdown summaries of `adamas eval` rows (internal to apps/): one table per task, variants as rows (full first,
// then each method by budget), lengths (or checkpoints) as columns.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace adamas::app {

// `header`: the lines above the table (command, model, text, date).
std::string markdown_report(const std::string& task, const std::vector<nlohmann::json>& rows,
                            const std::string& header);

}  // namespace adamas::app
