// glibc malloc settings for a training process (set once, when the torch addon loads).
#pragma once

#include <string>

namespace crpo {

// Applies the settings unless CRPO_MALLOC=default; returns what is in effect, for `crpo doctor`.
std::string tune_malloc_once();

}  // namespace crpo
