"""Times a submit_messages that cancels N pending reply parts of one thread
(the turn-taking cap, docs/performance.md, round twenty-four).
usage: python3 docs/bench/cancel_cost.py BINARY PORT N [N...]"""
import json, subprocess, sys, tempfile, time, urllib.request, os, re, statistics

binary, port = sys.argv[1], int(sys.argv[2])
sizes = [int(n) for n in sys.argv[3:]]
base = f"http://127.0.0.1:{port}"
d = tempfile.mkdtemp(prefix="sched24-cost-")
errlog = open(os.path.join(d, "stderr"), "w")
srv = subprocess.Popen([binary, "serve", "--dev", "--bind", f"127.0.0.1:{port}", "--db", os.path.join(d, "t.db"),
                        "--rate-limit-per-minute", "0", "--pace-scale", "100"],
                       stdout=subprocess.PIPE, stderr=errlog, text=True)
key = None
for line in srv.stdout:
    m = re.search(r"(nk_[A-Za-z0-9_-]{43})", line)
    if m:
        key = m.group(1)
        break
def post(action, body):
    req = urllib.request.Request(f"{base}/v1/turn-taking/actions/{action}", json.dumps(body).encode(),
                                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    for _ in range(100):
        try:
            t = time.perf_counter()
            with urllib.request.urlopen(req) as r:
                out = json.load(r)
            return out, time.perf_counter() - t
        except urllib.error.URLError as e:
            if hasattr(e, "code"):
                return json.load(e), None
            time.sleep(0.05)
    raise SystemExit("server not answering")
sentence = "This sentence is long enough to be a part of its own, number {}."
content = " ".join(sentence.format(i) for i in range(5))
try:
    for n in sizes:
        for rep in range(3):
            th, _ = post("open_thread", {})
            tid = th["thread"]["id"]
            sub, _ = post("submit_messages", {"thread_id": tid, "messages": [{"sender": "dana", "content": "go"}]})
            epoch = sub["turn_epoch"]
            pending = 0
            while pending < n:
                out, _ = post("respond", {"thread_id": tid, "content": content, "turn_epoch": epoch})
                if "scheduled" not in out:
                    print(f"respond refused at {pending} pending: {out}")
                    break
                pending += len(out["scheduled"])
            # a submit that cancels nothing, then the one that cancels `pending`
            _, idle = post("submit_messages", {"thread_id": tid, "messages": [{"sender": "dana", "content": "again"}]}) if pending == 0 else (None, None)
            _, took = post("submit_messages", {"thread_id": tid, "messages": [{"sender": "dana", "content": "stop"}]})
            _, after = post("submit_messages", {"thread_id": tid, "messages": [{"sender": "dana", "content": "nothing pending now"}]})
            print(f"pending={pending:6d} cancelling submit {took*1000:8.2f} ms; next submit (nothing to cancel) {after*1000:6.2f} ms", flush=True)
finally:
    srv.terminate(); srv.wait()
