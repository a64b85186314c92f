// The container check of a LibTorch checkpoint (checkpoint_last.pt, read by
// `permdnn train --resume`), before LibTorch parses it. A checkpoint is a
// zip archive (PyTorch's format: stored or deflated entries, sizes and
// CRC-32 in the central directory); LibTorch's own reader trusts its sizes
// and contents, and on a corrupt file it crashed or allocated gigabytes
// (Trainer.ResumeRejectsCorruptCheckpoints). CheckCheckpointArchive walks
// the central directory, checks every offset and size against the file,
// each local header against its directory entry, the zip64 end record
// against the plain one, and every entry's CRC-32 (inflating deflated
// ones), so that a truncated, bit-flipped or spliced file is an Error naming
// it and the entry. LibTorch-free (fuzz target train_from).
#pragma once

#include <string>
#include <string_view>

namespace permdnn::train {

// Throws permdnn::Error naming `path` (the file `bytes` came from) when the
// archive is not intact.
void CheckCheckpointArchive(std::string_view bytes, const std::string& path);

}  // namespace permdnn::train
