"""TTFT minus llama-server's own prompt_ms, seen by the thinnest possible
client: a raw socket, no HTTP library, sequential chat streams of about 128
prompt tokens. What it measures is llama-server's work outside prompt_ms
plus loopback, the floor any client's TTFT sits on; scripts/bench-llama-server.sh
prints it beside llmtool's figure.

    raw_ttft.py PORT
"""
import socket, json, time, sys, random
host, port = "127.0.0.1", int(sys.argv[1])
random.seed(1)
words = "the of substance mode attribute duration memory reason nature god mind body idea".split()
gaps = []
for i in range(12):
    prompt = " ".join(random.choice(words) for _ in range(110))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    s = socket.create_connection((host, port))
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    t0 = time.perf_counter(); s.sendall(req)
    buf = b""; first = None; timings = None
    while True:
        d = s.recv(65536)
        if not d: break
        buf += d
        if first is None and b'"content":"' in buf.replace(b'"content":""', b'') and b'"content":null' not in buf[-200:]:
            # first chunk with non-empty content
            for line in buf.split(b"\n"):
                if line.startswith(b"data: {"):
                    try: j = json.loads(line[6:])
                    except Exception: continue
                    ch = j.get("choices") or []
                    if ch and (ch[0].get("delta") or {}).get("content"):
                        first = time.perf_counter() - t0; break
    for line in buf.split(b"\n"):
        if line.startswith(b"data: {") and b"timings" in line:
            timings = json.loads(line[6:])["timings"]
    gaps.append(first * 1000 - timings["prompt_ms"])
print("raw-socket TTFT - prompt_ms (ms): min %.1f mean %.1f max %.1f" % (min(gaps), sum(gaps)/len(gaps), max(gaps)))
