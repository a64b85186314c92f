#!/usr/bin/python3
"""Writes tests/data/recurrent/: small PyTorch nn.LSTM / nn.GRU / nn.RNN models
(and a tiny character LM: Embedding -> GRU -> Linear)
exported with torch.onnx.export, their inputs and PyTorch's outputs, for
tests/runtime/recurrent_test.cc (the runtime must give PyTorch's outputs).

Run with Debian's python3-torch (torch 1.13):
    /usr/bin/python3 scripts/make-recurrent-testdata.py [OUT_DIR]
Each case NAME writes NAME.onnx, NAME.in<k>.npy (graph inputs in order) and
NAME.out<k>.npy (graph outputs in order). Seeded: reruns give the same data.
"""
import os
import sys

import numpy as np
import torch
from torch import nn


class Seq(nn.Module):
    """A recurrent module, optionally with initial states as inputs."""

    def __init__(self, rnn, states):
        super().__init__()
        self.rnn, self.states = rnn, states

    def forward(self, x, *h0):
        if self.states == 0:
            out = self.rnn(x)
        elif self.states == 1:
            out = self.rnn(x, h0[0])
        else:
            out = self.rnn(x, (h0[0], h0[1]))
        y, h = out
        return (y, *h) if isinstance(h, tuple) else (y, h)


class Classifier(nn.Module):
    """The issue's example: nn.LSTM over image rows, a Linear on the last step."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(28, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1, :])


class CharLM(nn.Module):
    """A --model charlm in miniature: token ids -> Embedding -> GRU -> Linear per step (int64 input)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 4)
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 6)

    def forward(self, ids):
        y, _ = self.gru(self.embed(ids))
        return self.fc(y)


def cases():
    g = torch.Generator().manual_seed(17)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    T, B, I, H = 5, 3, 6, 8
    out = []
    # name, module, inputs
    for kind, cls, nstates in (("lstm", nn.LSTM, 2), ("gru", nn.GRU, 1), ("rnn", nn.RNN, 1)):
        d = 2
        m = cls(I, H, num_layers=2, bidirectional=True, batch_first=True)
        out.append((f"{kind}_2layer_bidir_batchfirst_states", Seq(m, nstates),
                    [randn(B, T, I)] + [randn(2 * d, B, H) for _ in range(nstates)]))
        m = cls(I, H, num_layers=2, bidirectional=True, batch_first=True)
        out.append((f"{kind}_2layer_bidir_batchfirst", Seq(m, 0), [randn(B, T, I)]))
        m = cls(I, H, num_layers=1)
        out.append((f"{kind}_seqfirst_states", Seq(m, nstates), [randn(T, B, I)] + [randn(1, B, H) for _ in range(nstates)]))
    m = nn.RNN(I, H, num_layers=2, nonlinearity="relu", batch_first=True)
    out.append(("rnn_relu_2layer_batchfirst", Seq(m, 0), [randn(B, T, I)]))
    out.append(("lstm_classifier", Classifier(), [randn(2, 28, 28)]))
    out.append(("charlm_gru", CharLM(), [torch.randint(0, 6, (2, 7), generator=g)]))
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "data", "recurrent")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(17)
    for name, module, inputs in cases():
        module.eval()
        with torch.no_grad():
            outputs = module(*inputs)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        in_names = [f"in{k}" for k in range(len(inputs))]
        out_names = [f"out{k}" for k in range(len(outputs))]
        torch.onnx.export(module, tuple(inputs), os.path.join(out_dir, name + ".onnx"), opset_version=14,
                          input_names=in_names, output_names=out_names)
        for k, t in enumerate(inputs):
            dtype = np.int64 if t.dtype == torch.int64 else np.float32  # token ids stay int64
            np.save(os.path.join(out_dir, f"{name}.in{k}.npy"), t.numpy().astype(dtype))
        for k, t in enumerate(outputs):
            np.save(os.path.join(out_dir, f"{name}.out{k}.npy"), t.numpy().astype(np.float32))
        print(name, [tuple(t.shape) for t in inputs], "->", [tuple(t.shape) for t in outputs])


if __name__ == "__main__":
    main()
