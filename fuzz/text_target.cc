// Fuzz target "text": the character-LM corpus reader of `permdnn train
// --model charlm --data FILE` (core's LoadTextCorpus, docs/run-format.md).
// The input is one corpus file. When it loads, the corpus must keep the
// promises the trainer relies on: the alphabet strictly increasing and
// holding every byte of the file, every id below vocab(), the two splits
// together as long as the file, and a window count that fits its split.
#include <filesystem>
#include <string>

#include "fuzz/targets.h"
#include "permdnn/core/dataset.h"
#include "permdnn/core/error.h"

namespace permdnn::fuzz {

int FuzzText(const uint8_t* data, std::size_t size) {
  const std::string path = WriteInputFiles("text", data, size, ScratchDir());
  TextCorpus c;
  try {
    c = LoadTextCorpus(path, 0.1);
  } catch (const Error&) {
    return 0;
  }
  if (c.vocab() < 1 || c.vocab() > 256) __builtin_trap();
  for (std::size_t i = 1; i < c.alphabet.size(); ++i)
    if (c.alphabet[i] <= c.alphabet[i - 1]) __builtin_trap();
  if (c.train_ids.size() + c.test_ids.size() != size) __builtin_trap();
  for (const auto* split : {&c.train_ids, &c.test_ids})
    for (int64_t id : *split)
      if (id < 0 || id >= c.vocab()) __builtin_trap();
  for (int64_t t : {1, 4, 64}) {
    const int64_t n = static_cast<int64_t>(c.train_ids.size());
    const int64_t w = TextCorpus::WindowCount(n, t);
    if (w < 0 || (w > 0 && w * t + 1 > n)) __builtin_trap();
  }
  return 0;
}

}  // namespace permdnn::fuzz
