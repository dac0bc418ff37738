"""The stack file's schema: its card (or cards), one server, the models that share them, and the voice pipeline."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from budget.gpus import preset
from budget.units import human, parse_size

Device = Union[Literal["cpu"], Annotated[int, Field(ge=0)]]


class Share(BaseModel):
    """How much of the card a model may hold: bytes, a percent of the card, `auto` or `rest`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mode: Literal["bytes", "percent", "auto", "rest"]
    value: float = 0

    def __str__(self) -> str:
        return {"bytes": human(self.value), "percent": f"{self.value:g}%"}.get(self.mode, self.mode)


def _share(value: Any) -> Any:
    if isinstance(value, Share) or isinstance(value, dict):
        return value
    text = str(value).strip().lower()
    if text in ("auto", "rest"):
        return {"mode": text}
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise ValueError(f"{value!r} is not a percent; write it like 15%") from None
        if not 0 < percent <= 100:
            raise ValueError(f"{value!r} is out of range; a percent of the card is above 0 and at most 100")
        return {"mode": "percent", "value": percent}
    return {"mode": "bytes", "value": parse_size(value)}


def _size(value: Any) -> Any:
    return parse_size(value)


ShareField = Annotated[Share, BeforeValidator(_share)]
Bytes = Annotated[int, BeforeValidator(_size)]


class Strict(BaseModel):
    """Unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class GpuSpec(Strict):
    """The one card of a `gpu:` stack (or `cpu`: plan against host RAM)."""

    device: Device = 0
    memory: Literal["auto"] | Bytes = "auto"
    reserve: Bytes = parse_size("1GiB")
    auto_margin: float = Field(0.10, ge=0, le=1, description="headroom added to an `auto` share's estimate")
    tolerance: float = Field(0.10, ge=0, le=10, description="how far a model's measured memory after warm-up may "
                                                             "exceed its share before the start is refused")


class CardSpec(GpuSpec):
    """One card of a `gpus:` stack: a CUDA index, planned against NVML, `memory`, or a preset's total."""

    device: Annotated[int, Field(ge=0)]
    preset: str | None = Field(None, description="plan for this card model (see `orchestrator gpus`) instead of NVML")

    @model_validator(mode="after")
    def _one_total(self) -> CardSpec:
        if self.preset is not None and self.memory != "auto":
            raise ValueError(f"card {self.device} has both preset {self.preset!r} and memory {human(self.memory)}; "
                             "keep one: a preset plans the card model's total, memory a size you give")
        if self.preset is not None:
            preset(self.preset)  # an unknown name is a ValueError listing the known ones
        return self


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(12345, ge=1, le=65535)
    api_key: str | None = None


class ModelSpec(Strict):
    """What every model kind has: where it is, where it runs, how much it may hold. Each kind's subclass is that
    kind's stack-file schema (its `kind` literal names it) and names its planner estimator; the rest of what a
    kind is lives in its row of `orchestrator/kinds.py`."""

    estimator: ClassVar[str]   # "module:function" that sizes one entry of this kind, without loading weights

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    path: str | None = None
    config: str | None = Field(None, validation_alias=AliasChoices("config", "card"),  # `card:`: its old name
                               description="a model config in configs/models/ to plan with when path is absent")
    memory: ShareField = Field(default_factory=lambda: Share(mode="auto"))
    device: Device | None = None
    isolation: Literal["process", "none"] = "process"
    aliases: list[Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]] = Field(
        default_factory=list, description="more served names: what clients written for other servers ask for")


class LLMSpec(ModelSpec):
    kind: Literal["llm"]
    estimator = "budget.estimators.llm:estimate_llm"
    memory: ShareField = Field(default_factory=lambda: Share(mode="rest"))
    # An OpenAI-compatible server we do not run (the lab's vLLM, an Ollama): `url` instead of `path`.
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server, e.g. http://host:8000/v1")
    api_key: str | None = Field(None, description="the key the upstream server wants (ours is server.api_key)")
    model: str | None = Field(None, description="the upstream's name for the model (default: this model's name)")
    # Who runs it: our engine, vLLM launched with the plan's share, or any command that serves the OpenAI API.
    engine: Literal["ours", "vllm", "command"] = "ours"
    command: list[str] | None = Field(None, description="engine: command's argv; {port}, {api_key}, {path}, "
                                      "{name}, {share_bytes}, {gpu_memory_utilization} are filled in")
    health_path: str = Field("/health", description="the launched server's health URL path, from its root")
    start_timeout_s: float = Field(600, gt=0, description="how long a launched server may take to become healthy")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int = Field(32, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=16)
    max_pending_requests: int = Field(256, ge=1, description="running + waiting requests before new ones get 429")
    kv_cache_dtype: Literal["auto", "bfloat16", "float16", "float32", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    quantization: Literal["auto", "none", "int8", "int4", "fp8"] = Field(
        "auto", description="weights: auto keeps a GGUF's quantized tensors as stored (int4 groups, int8 rows); none "
                            "dequantizes them; int8 / int4 quantize a 16-bit folder's projections at load; fp8 "
                            "too, on a CUDA card of compute capability 8.9 or newer (vLLM's fp8)")
    block_size: Literal[16, 32, 64, 128] = 16  # the paged-attention kernel walks whole power-of-two pages
    enforce_eager: bool = False
    tool_call_parser: Literal["hermes"] | None = None   # for a vLLM we launch; our engine always writes hermes calls
    reasoning_parser: Literal["qwen3"] | None = None    # <think>…</think> into reasoning_content
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None

    @model_validator(mode="after")
    def _where_it_runs(self) -> LLMSpec:
        if self.url is not None:
            if self.path is not None:
                raise ValueError(f"llm {self.name!r} has both url (a server we do not run) and path (a model we "
                                 "load); keep one")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url {self.url!r} of {self.name!r} is not http(s); write it like "
                                 "http://127.0.0.1:8000/v1")
            if self.engine != "ours":
                raise ValueError(f"llm {self.name!r} has a url, so nothing is launched; drop engine: "
                                 f"{self.engine} (or drop url to launch it)")
        if self.engine == "command" and not self.command:
            raise ValueError(f"llm {self.name!r} has engine: command but no command; give its argv, e.g. "
                             "[vllm, serve, {path}, --port, '{port}']")
        if self.engine != "command" and self.command is not None:
            raise ValueError(f"llm {self.name!r} has a command but engine: {self.engine}; set engine: command")
        return self

    @property
    def remote(self) -> bool:
        """Served over HTTP rather than by our engine: a url, or a server we launch (vLLM, a command)."""
        return self.url is not None or self.engine != "ours"


class ASRSpec(ModelSpec):
    kind: Literal["asr"]
    estimator = "budget.estimators.asr:estimate_asr"
    compute_type: Literal["default", "auto", "float16", "bfloat16", "float32", "int8", "int8_float16",
                          "int8_bfloat16", "int8_float32", "int16"] = "default"
    beam_size: int = Field(5, ge=1, le=16)
    batch_size: int = Field(1, ge=1, le=64)
    language: str | None = None


class TTSSpec(ModelSpec):
    kind: Literal["tts"]
    estimator = "budget.estimators.tts:estimate_tts"
    backend: Literal["auto", "vits", "piper", "kokoro"] = "auto"  # auto: Kokoro for an .onnx with a voices file
    # beside it, Piper for an .onnx voice (with its .onnx.json), VITS for a folder
    voices: str | None = Field(None, description="Kokoro: its voices file (.npz, or kokoro-onnx's voices-v1.0.bin); "
                               "default: the one beside the model")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    max_input_chars: int = Field(400, ge=1, description="longest piece of text synthesised at once")
    speaker: str | None = None
    voice_aliases: dict[str, str] = Field(default_factory=dict, description="voice names of other servers (Kokoro's "
                                          "af_sky+af_bella) mapped to this model's voices")

    @model_validator(mode="after")
    def _voices_for_kokoro(self) -> TTSSpec:
        if self.voices is not None and self.backend not in ("auto", "kokoro"):
            raise ValueError(f"tts {self.name!r} names a voices file, which only a Kokoro model has; drop voices: or "
                             f"set backend: kokoro (it is backend: {self.backend})")
        return self


class EmbeddingSpec(ModelSpec):
    kind: Literal["embedding"]
    estimator = "budget.estimators.embedding:estimate_embedding"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = Field(32, ge=1)
    max_seq_length: int | None = Field(None, ge=1)


class VADSpec(ModelSpec):
    kind: Literal["vad"]
    estimator = "budget.estimators.vad:estimate_vad"
    device: Device | None = "cpu"
    isolation: Literal["process", "none"] = "none"  # tiny and CPU-bound: in the server, unless asked otherwise
    threshold: float = Field(0.5, gt=0, lt=1)


# Every kind's schema, by its `kind` literal, in the order defined: the stack file's union is made of them.
SPEC_BY_KIND: dict[str, type[ModelSpec]] = {get_args(cls.model_fields["kind"].annotation)[0]: cls
                                             for cls in ModelSpec.__subclasses__()}
AnyModel = Annotated[Union[tuple(SPEC_BY_KIND.values())], Field(discriminator="kind")]
KIND_NAMES = tuple(SPEC_BY_KIND)


class VoiceSpec(Strict):
    """Which models the realtime voice pipeline (/v1/realtime) chains, its system prompt, and its limits."""
    asr: str | None = None
    llm: str | None = None
    tts: str | None = None
    vad: str | None = None
    system_prompt: str | None = None
    max_sessions: int = Field(32, ge=1)              # more are refused with 429 at the handshake
    max_session_minutes: float = Field(60, gt=0)     # OpenAI's own cap on a Realtime session
    idle_timeout_s: float = Field(300, gt=0)         # no event from the client for this long closes the session
    max_event_bytes: int = Field(15 * 2**20, ge=1024)  # one client event; OpenAI's limit for an append is 15 MiB
    max_buffered_audio_s: float = Field(120, gt=0)   # uncommitted input audio a session may hold
    turn_window: Literal["whole", "fitted"] = Field("whole", description="Whisper's encoder window for a turn's "
                                                    "transcript (drafts and finals): whole, 30 s as faster-whisper "
                                                    "pads it; or fitted to the turn, the next 5 s step with 5 s to "
                                                    "spare, several times faster on a CPU (bench/asr_wer.py --windows "
                                                    "measures the WER of each)")


class Stack(Strict):
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    gpus: list[CardSpec] | None = Field(None, min_length=1, description="several cards; each model's `device` "
                                        "picks one (default: the first)")
    server: ServerSpec = Field(default_factory=ServerSpec)
    models: list[AnyModel] = Field(min_length=1)
    voice: VoiceSpec | None = None

    @property
    def cards(self) -> list[GpuSpec]:
        """Every card the stack plans: the `gpus:` list, or the one `gpu:`."""
        return list(self.gpus) if self.gpus is not None else [self.gpu]

    def card_of(self, spec: ModelSpec) -> GpuSpec | None:
        """The card a model is planned on; None when it is off every card (on the CPU of a GPU stack, or a url)."""
        if getattr(spec, "url", None) is not None:
            return None
        device = spec.device if spec.device is not None else self.cards[0].device
        return next((card for card in self.cards if card.device == device), None)

    @model_validator(mode="after")
    def _consistent(self) -> Stack:
        self._check_cards()
        names = [m.name for m in self.models]
        served: dict[str, str] = {}
        for i, m in enumerate(self.models):
            if names.index(m.name) != i:
                _conflict(("models", i, "name"), f"model name {m.name!r} is used twice; names must be unique")
            for alias in m.aliases:
                if alias in names or alias in served:
                    _conflict(("models", i, "aliases"), f"alias {alias!r} of {m.name!r} is already the name or an "
                              f"alias of {served.get(alias, alias)!r}; served names must be unique")
                served[alias] = m.name
            if m.memory.mode == "rest" and m.kind != "llm":
                _conflict(("models", i, "memory"), f"{m.kind} model {m.name!r} has memory: rest, which only an LLM "
                          "can take (what is left becomes its KV cache); give it a size, a percent or auto")
        for card in self.cards:  # rest is what is left of one card: one taker per card
            rest = [i for i, m in enumerate(self.models) if m.memory.mode == "rest" and self.card_of(m) is card]
            if len(rest) > 1:
                _conflict(("models", rest[1], "memory"), f"only one model can take memory: rest on card {card.device}, "
                          f"but {' and '.join(self.models[i].name for i in rest)} both do; "
                          "give the others a size, a percent or auto, or put them on another card")
        for role in ("asr", "llm", "tts", "vad"):
            wanted = getattr(self.voice, role) if self.voice else None
            match = next((m for m in self.models if m.name == wanted), None)
            if wanted is not None and match is None:
                _conflict(("voice", role), f"voice.{role} names model {wanted!r}, which is not in models "
                          f"(known: {', '.join(names)})")
            if match is not None and match.kind != role:
                _conflict(("voice", role), f"voice.{role} names model {wanted!r}, but that model is kind {match.kind}")
        return self


    def _check_cards(self) -> None:
        """`gpu` or `gpus`, distinct indices, and every model on a card the stack lists (or the CPU)."""
        if self.gpus is not None and "gpu" in self.model_fields_set:
            _conflict(("gpus",), "the stack has both gpu (one card) and gpus (several); keep one: move the gpu "
                      "entry into the gpus list")
        devices = [card.device for card in self.cards]
        for i, device in enumerate(devices):
            if devices.index(device) != i:
                _conflict(("gpus", i, "device"), f"card {device} is listed twice in gpus; each card once")
        listed = ", ".join(str(d) for d in devices)
        for i, m in enumerate(self.models):
            if getattr(m, "url", None) is not None and m.device is not None:
                _conflict(("models", i, "device"), f"llm {m.name!r} has a url, so it runs on no card of ours; "
                          "drop its device")
            if m.device is not None and m.device != "cpu" and m.device not in devices:
                fix = (f"set its device to one of them, or add {{device: {m.device}}} to gpus" if self.gpus is not None
                       else "leave its device out, or list every card under gpus: (and drop gpu:)")
                _conflict(("models", i, "device"), f"model {m.name!r} names device {m.device}, which this stack does "
                          f"not have (its devices: {listed}); {fix}")


def _conflict(loc: tuple, message: str) -> None:
    """Raise a cross-field error that still knows where in the file it points."""
    raise PydanticCustomError("stack_conflict", message, {"where": loc})
