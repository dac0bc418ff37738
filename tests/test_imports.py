"""Planning runs on a laptop without torch; none of our import names is taken by a dependency."""
import importlib.metadata
import importlib.util
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


def test_server_supervisor_and_cli_import_without_torch_or_transformers():
    """A server whose engines live in workers (or elsewhere) loads neither; the LLM's tokenizer brings transformers
    only when an LLM is attached."""
    code = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")',
                               'name.split(".")[0] in ("torch", "transformers")') + textwrap.dedent("""
        import orchestrator.server.app, orchestrator.supervisor, orchestrator.run, orchestrator.cli
        from orchestrator.server.app import build_app
        from orchestrator.server.companions import Companions
        build_app(None, "key", Companions())
        assert not {"torch", "transformers"} & set(sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


OURS = ("orchestrator", "budget", "engines", "llm_kernels")


def test_no_dependency_shares_an_import_name_of_ours():
    """Two packages under one top-level name in one process break whichever loads second (as `kernels` did)."""
    owners = importlib.metadata.packages_distributions()
    for name in OURS:
        assert (ROOT / name / "__init__.py").exists(), f"{name} is one of our packages"
        others = [d for d in owners.get(name, []) if d != "voice-orchestrator"]
        assert not others, f"our package {name!r} shares its import name with the distribution(s) {others}"
    assert not (ROOT / "kernels").exists(), "a top-level kernels/ would shadow Hugging Face's `kernels` from the repo root"


def test_transformers_activations_beside_our_attention_kernels(tmp_path):
    """From the repo root (as pytest and `python -m` run): transformers' own imports and our kernels in one process."""
    code = textwrap.dedent(f"""
        import importlib.util, torch
        import transformers.activations
        from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM
        from llm_kernels.dispatch import paged_attention
        from llm_kernels.triton_paged_attention import paged_attention_triton
        spec = importlib.util.find_spec("kernels")
        assert spec is None or "site-packages" in spec.origin, spec  # Hugging Face's, if installed; never a folder of ours
        Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=16)).save_pretrained({str(tmp_path)!r})
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})
        out = model(torch.tensor([[1, 2, 3]]))
        assert out.logits.shape == (1, 3, 64)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_import_kernels_outside_the_repo_is_hugging_face_s(tmp_path):
    code = ("import importlib.util; spec = importlib.util.find_spec('kernels'); "
            "print(spec.origin if spec else 'absent'); import llm_kernels.dispatch")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    origin = result.stdout.strip()
    assert origin == "absent" or "site-packages" in origin, origin
    if importlib.util.find_spec("kernels") is not None:
        assert importlib.metadata.packages_distributions()["kernels"] == ["kernels"]


def _imports(path, module: str, known: set[str]) -> set[str]:
    """Our modules `module` imports, at the top or inside functions (not under `if TYPE_CHECKING:`)."""
    import ast

    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known and name != module}
    return found


def test_no_import_cycle_among_our_modules():
    """Walk every import of ours, function-level ones included: a cycle (as run.py and ray_serve.py had) fails."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for name in OURS for p in (ROOT / name).rglob("*.py")}
    graph = {module: _imports(path, module, set(files)) for module, path in files.items()}
    done, path_of = set(), {}

    def visit(module: str, stack: list[str]) -> None:
        path_of[module] = len(stack)
        stack.append(module)
        for nxt in sorted(graph[module]):
            if nxt in path_of:
                raise AssertionError("import cycle: " + " -> ".join(stack[path_of[nxt]:] + [nxt]))
            if nxt not in done:
                visit(nxt, stack)
        stack.pop()
        del path_of[module]
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [])
