// permdnn train: train a model with per-layer compression (LibTorch; this
// file is compiled only when permdnn::train is built). See trainer.h.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/break_even.h"
#include "cli/commands.h"
#include "permdnn/core/error.h"
#include "permdnn/train/trainer.h"

namespace permdnn::cli {

void AddTrainCommand(CLI::App& app) {
  auto o = std::make_shared<train::TrainOptions>();
  CLI::App* cmd = app.add_subcommand("train", "train a model with permuted-diagonal, block-circulant, pruned (or dense) layers on Fashion-MNIST");
  cmd->add_option("--model", o->model,
                  "mlp | lenet300 | lenet5 | lenet5caffe | cnn | tiny | tinycnn | lstm (Fashion-MNIST row by row) | "
                  "charlm (character LM on a text corpus)")
      ->capture_default_str();
  cmd->add_option("--cell", o->cell, "lstm, charlm: recurrent cell of rnn1, lstm | gru")->capture_default_str();
  cmd->add_option("--hidden", o->hidden, "lstm, charlm: hidden size of rnn1 (a multiple of p)")->capture_default_str();
  cmd->add_option("--width", o->width, "resnet: channels of the first stage (stages w, 2w, 4w)")->capture_default_str();
  cmd->add_option("--embed", o->embed, "charlm: embedding width (the input size of rnn1)")
      ->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "charlm: characters per training sequence")->capture_default_str();
  cmd->add_option("--compress", o->compress,
                  "SPEC: dense | permdiag:p=8 | circulant:p=8 | prune:density=0.1[,bits=4[,index=5]] | per layer "
                  "fc1=permdiag:p=4,fc3=dense (the global method skips a first conv layer and the last layer "
                  "unless named)")
      ->capture_default_str();
  cmd->add_option("--epochs", o->epochs, "epochs")->capture_default_str();
  cmd->add_option("--out", o->out_dir, "run directory (checkpoints, metrics, model.json)")->required();
  cmd->add_option("--data", o->data_dir,
                  "Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist); charlm: a text file or "
                  "directory (default /usr/share/games/fortunes)");
  cmd->add_flag("--resume", o->resume, "continue the run in --out from checkpoint_last.pt");
  cmd->add_option("--from", o->from_dir, "a trained dense run directory: project its layers, then fine-tune");
  cmd->add_option("--seed", o->seed, "seed (init, offsets, shuffling)")->capture_default_str();
  cmd->add_option("--lr", o->lr, "Adam learning rate (x0.1 for the last third of the epochs)")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay,
                  "decoupled weight decay (AdamW): weights ×(1 − lr·wd) after each step; 0: none")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str();
  cmd->add_option("--threads", o->threads, "threads (LibTorch and permdiag kernels)")->capture_default_str();
  cmd->add_option("--limit-train", o->limit_train, "use only the first N training images / sequences (quick runs)");
  cmd->add_option("--limit-test", o->limit_test,
                  "evaluate only the first N test images / held-out sequences (quick runs; the test set is then a "
                  "fixed prefix, the same for every run)");
  cmd->add_option("--method", o->method,
                  "adam | admm (ADMM-NN: --compress is the target; ADMM epochs on the dense model, then hard "
                  "projection and retraining with the structure fixed; docs/admm.md)")
      ->capture_default_str();
  AddAdmmOptions(cmd, o.get());
  auto break_even = std::make_shared<std::string>();
  AddBreakEvenOptions(cmd, break_even.get(), &o->refuse_break_even);
  cmd->callback([o, break_even] {
    ApplyBreakEven(*break_even, o.get());
    train::TrainResult r = train::Train(*o, std::cout);
    if (r.interrupted) {
      std::fflush(stdout);
      throw Error("training interrupted; checkpoint_last.pt is saved, continue with --resume");
    }
    std::cout << "\n" << train::SummaryText(*o, r);
  });
}

PERMDNN_REGISTER_COMMAND(AddTrainCommand);

}  // namespace permdnn::cli
