"""Loading a model costs its weights, not more: built in the serving dtype, read without a memory map."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

from engines.llm.models.loader import load_model

ROOT = Path(__file__).resolve().parents[1]


def make_bf16_qwen3(folder: Path, hidden: int, inter: int, layers: int, vocab: int, heads: int = 4,
                    kv_heads: int = 2, head_dim: int = 64) -> Path:
    """A zero-weight bfloat16 Qwen3 checkpoint written directly (no transformers: fast at ~100 MB)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = dict(model_type="qwen3", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
               max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False, torch_dtype="bfloat16")
    (folder / "config.json").write_text(json.dumps(cfg))
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
                   p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                   p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                   p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
                   p + "self_attn.q_norm.weight": (head_dim,), p + "self_attn.k_norm.weight": (head_dim,),
                   p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                   p + "mlp.down_proj.weight": (hidden, inter),
                   p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,)}
    save_file({name: torch.zeros(shape, dtype=torch.bfloat16) for name, shape in shapes.items()},
              str(folder / "model.safetensors"))
    return folder


class Allocations(TorchDispatchMode):
    """Every real (not meta) tensor a factory op makes (empty, empty_like, ...): its dtype and element count."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[torch.dtype, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__.startswith("empty") and isinstance(out, torch.Tensor) \
                and not out.is_meta:
            self.made.append((out.dtype, out.numel()))
        return out


def test_weights_are_materialised_in_the_serving_dtype(tmp_path):
    """Failed before the fix: to_empty() made every weight float32 (4 B a parameter), then .to() converted."""
    folder = make_bf16_qwen3(tmp_path / "m", hidden=128, inter=256, layers=2, vocab=512)
    with Allocations() as seen:
        model = load_model(folder, torch.bfloat16, torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    matrix = 128 * 128  # the smallest weight matrix; the float32 rotary table is smaller than one
    wide = [(dtype, n) for dtype, n in seen.made if dtype == torch.float32 and n >= matrix]
    assert not wide, f"float32 tensors as large as weights were made while loading: {wide[:3]}"


PEAK_SCRIPT = """
import json, sys, torch
from pathlib import Path
from engines.llm.models.decoder import CausalLM
from engines.llm.models.loader import load_model, read_config
def kib(key):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key)) * 1024
with torch.device('meta'):  # meta tensors' first use imports ~150 MB of torch: not the load's cost
    CausalLM(read_config(Path(sys.argv[1])))
base = kib('VmRSS:')
open('/proc/self/clear_refs', 'w').write('5')  # resets the peak (VmHWM) to now
model = load_model(Path(sys.argv[1]), torch.bfloat16, torch.device('cpu'))
print(json.dumps({'weights': model.weight_bytes(), 'peak': kib('VmHWM:') - base}))
"""


def test_cpu_load_peaks_near_the_weights(tmp_path):
    """Failed before the fix: the safetensors memory map kept the whole file resident beside the weights (peak
    2.0x the weights on this 88 MiB model; 3.05 GiB for 1.31 GiB in the issue)."""
    folder = make_bf16_qwen3(tmp_path / "m", hidden=512, inter=1536, layers=6, vocab=32000)
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["peak"] < 1.25 * figures["weights"] + 16 * 2**20, figures
