"""Name the machine a benchmark ran on, for its table and JSON."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), None) if cpuinfo.is_file() else None
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"
