// Inspection of the compressed layers of an ONNX model (for `permdnn sim
// --model`): placeholder, filled in by that work.
#pragma once
