// Inspection of a model's compressed layers (include/permdnn/runtime/inspect.h):
// placeholder, filled in by the `permdnn sim --model` work.
#include "permdnn/runtime/inspect.h"
