"""Planning runs on a laptop without torch; our `kernels` package does not fool transformers."""
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

BLOCK_TORCH = textwrap.dedent("""
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, NoTorch())
""")


def test_planner_and_cli_without_torch():
    code = BLOCK_TORCH + textwrap.dedent("""
        import budget.planner, budget.report, budget.picture, budget.target, orchestrator.cli
        from orchestrator.cli import main
        code = main(["plan", "configs/vtuber-24gb.yaml", "--gpu", "rtx-4090", "--json"])
        assert "torch" not in sys.modules
        raise SystemExit(code)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"fits": true' in result.stdout


def test_transformers_does_not_take_our_kernels_for_hf_kernels(tmp_path):
    code = textwrap.dedent(f"""
        import importlib.util, torch
        from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
        from transformers.utils import is_kernels_available
        assert importlib.util.find_spec("kernels").origin.startswith({str(ROOT)!r}), "our kernels is importable"
        assert not is_kernels_available()
        Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=16)).save_pretrained({str(tmp_path)!r})
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})
        out = model(torch.tensor([[1, 2, 3]]))
        assert out.logits.shape == (1, 3, 64)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
