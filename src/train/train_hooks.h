// The trainer's extension points for methods that change the loss or the
// weights around the plain loop (trainer.cc), used by ADMM (admm.h). A
// TrainSession calls, in order: Attach (before a checkpoint is loaded, so
// state a hook registers as module buffers travels in the checkpoint),
// AfterConvert (after --from's projection, before its accuracy is measured),
// Started (after resume or conversion), then per epoch LearningRate, per
// batch Penalty (added to the loss) and AfterStep (after the optimizer step
// and the masks). A hook that returns false from UseCompressionSchedule
// replaces the pruning schedule of prune_layers.h (the masks then stay as the
// hook leaves them). FinalForm: whether an epoch's model may become the run's
// "best" model.json (false: only the last epoch writes it).
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "permdnn/train/trainer.h"
#include "src/train/models.h"

namespace permdnn::train {

class TrainHooks {
 public:
  virtual ~TrainHooks() = default;
  virtual void Attach(Net& /*net*/, int64_t /*batches_per_epoch*/) {}
  virtual std::string AfterConvert(Net& /*net*/) { return ""; }
  virtual void Started(Net& /*net*/, bool /*resumed*/) {}
  // The learning rate of the epoch about to run (called before its batches).
  virtual void LearningRate(double /*lr*/) {}
  // Undefined tensor: nothing to add.
  virtual torch::Tensor Penalty(Net& /*net*/) { return {}; }
  // step: the global 0-based batch step just trained; loss: its batch loss
  // (penalty excluded); test_accuracy evaluates the model on the test set.
  // Returns a log line ("" for none).
  virtual std::string AfterStep(Net& /*net*/, int64_t /*step*/, double /*loss*/,
                                const std::function<double()>& /*test_accuracy*/) {
    return "";
  }
  virtual bool UseCompressionSchedule() const { return true; }
  virtual bool FinalForm() const { return true; }
};

// Train with hooks (nullptr: the plain loop, as Train).
TrainResult TrainWithHooks(const TrainOptions& options, std::ostream& log, TrainHooks* hooks);

}  // namespace permdnn::train
