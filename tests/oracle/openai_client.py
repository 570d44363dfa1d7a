"""Streams a chat and a completion from an OpenAI-compatible server with the
official `openai` client (requirements-bench.txt) and prints what it read as
JSON: the text, the usage, and the chunks it yielded.

    openai_client.py BASE_URL MODEL MAX_TOKENS

BASE_URL is the server's root (`http://127.0.0.1:PORT`); tests/bench_server.rs
checks the output against the test server's deterministic answer.

    openai_client.py stream-bench --url BASE_URL --requests N --max-tokens T

reads N chat streams one after another as fast as the client can and prints
{"chunks", "seconds" (time spent streaming), "mean_ttft_ms"}: the reference
figure of scripts/bench-client.sh.
"""
import json
import sys

import openai


def summarize(stream, text_of):
    text, reasoning, usage, chunks, roles, finish = "", "", None, 0, [], None
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            piece, role, think = text_of(choice)
            text += piece or ""
            reasoning += think or ""
            if role:
                roles.append(role)
            finish = choice.finish_reason or finish
    return {"text": text, "reasoning": reasoning, "usage": usage, "chunks": chunks,
            "roles": roles, "finish_reason": finish}


def main():
    base_url, model, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "say a few words please"}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    completion = client.completions.create(
        model=model,
        prompt="once upon a time",
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    delta = lambda c: (c.delta.content, c.delta.role,
                       getattr(c.delta, "reasoning_content", None))
    print(json.dumps({
        "openai": openai.__version__,
        "models": [m.id for m in client.models.list()],
        "chat": summarize(chat, delta),
        "completion": summarize(completion, lambda c: (c.text, None, None)),
    }))


def stream_bench(argv):
    import argparse
    import time
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=20000)
    a = p.parse_args(argv)
    client = openai.OpenAI(base_url=a.url + "/v1", api_key="unused", max_retries=0)
    model = client.models.list().data[0].id
    chunks, busy, ttfts = 0, 0.0, []
    for i in range(a.requests):
        st = time.perf_counter()
        first = None
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"request {i}"}],
            max_tokens=a.max_tokens, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if first is None:
                    first = time.perf_counter() - st
                chunks += 1
        busy += time.perf_counter() - st
        ttfts.append((first or 0.0) * 1000)
    print(json.dumps({"openai_version": openai.__version__, "chunks": chunks,
                      "seconds": busy, "mean_ttft_ms": sum(ttfts) / len(ttfts)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["stream-bench"]:
        stream_bench(sys.argv[2:])
    else:
        main()
