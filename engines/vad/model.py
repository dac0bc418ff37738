"""Silero VAD (16 kHz) as a plain PyTorch module whose recurrent state lives outside it, so streams can share it."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16_000
WINDOW = 512          # samples the net scores at once (32 ms)
CONTEXT = 64          # samples of the previous window the net sees before each window
HIDDEN = 128
# the package's current model first; its safetensors holds an older, different model
WEIGHT_FILES = ("silero_vad.jit", "silero_vad_16k.safetensors")
_JIT_NAMES = {"stft.forward_basis_buffer": "stft_conv.weight",
              **{f"encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}" for i in range(4) for p in ("weight", "bias")},
              **{f"decoder.rnn.{p}": f"lstm_cell.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
              **{f"decoder.decoder.2.{p}": f"final_conv.{p}" for p in ("weight", "bias")}}


def packaged_weights() -> Path:
    """The weights the silero-vad wheel ships, found without importing it (its import pins torch to one thread)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the silero-vad package is not installed; `pip install silero-vad`, or set `path` to a "
                         "folder holding silero_vad.jit")
    return Path(spec.submodule_search_locations[0]) / "data" / WEIGHT_FILES[0]


def weights_in(folder: Path) -> Path:
    """The checkpoint inside a model folder; names the files it looked for when there is none."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} holds no Silero VAD checkpoint (looked for {', '.join(WEIGHT_FILES)}); "
                     f"leave `path` out to use the weights the silero-vad package ships")


class SileroNet(nn.Module):
    """STFT conv -> four conv blocks -> LSTM cell -> speech probability, one window per batch row."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, kernel_size=3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, kernel_size=3, padding=1)
        self.lstm_cell = nn.LSTMCell(HIDDEN, HIDDEN)
        self.final_conv = nn.Conv1d(HIDDEN, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, CONTEXT + WINDOW) samples, state: (2, B, HIDDEN) h and c -> (B,) probabilities, new state."""
        spec = self.stft_conv(F.pad(x, (0, CONTEXT), mode="reflect").unsqueeze(1))
        real, imag = spec.chunk(2, dim=1)
        feats = torch.sqrt(real * real + imag * imag)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats = F.relu(conv(feats))
        h, c = self.lstm_cell(feats.squeeze(-1), (state[0], state[1]))
        prob = torch.sigmoid(self.final_conv(F.relu(h).unsqueeze(-1)))
        return prob.reshape(-1), torch.stack([h, c])


def load_net(weights: Path, device: str) -> SileroNet:
    """Build the net from a TorchScript export (the package's) or a safetensors file with this module's names."""
    if weights.suffix == ".jit":
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; it still reads the package's export
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(weights), map_location="cpu")
        tensors = {_JIT_NAMES.get(k, k): v for k, v in scripted._model.state_dict().items()}
    else:
        from safetensors.torch import load_file
        tensors = load_file(str(weights))
    net = SileroNet()
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} is not a Silero VAD 16 kHz checkpoint (missing {missing}, unexpected "
                         f"{unexpected}); leave `path` out to use the weights the silero-vad package ships")
    return net.to(device).eval()
