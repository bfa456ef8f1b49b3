"""Checks `tinylm serve` and `tinylm chat` as programs, from outside (tests/tools/CMakeLists.txt runs it).

  serve_check.py --tinylm BIN --model DIR            plain HTTP (standard library only) and a chat in a pty
  serve_check.py --tinylm BIN --model DIR --openai   the same server through the `openai` client (ctest -L torch)

The server is started on a free port (--port 0; the port is read from its first line), queried, then stopped with
SIGINT, which must end it cleanly (exit code 0).
"""
import argparse
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def start_server(tinylm, model):
    proc = subprocess.Popen([tinylm, "serve", "--model", model, "--port", "0"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
        if m:
            return proc, int(m.group(1))
    proc.kill()
    sys.exit("the server did not report its port")


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def check_plain(port):
    status, body = post(port, "/v1/chat/completions",
                        {"messages": [{"role": "user", "content": "Привет"}], "max_tokens": 8, "temperature": 0})
    assert status == 200, body
    answer = json.loads(body)["choices"][0]["message"]["content"]
    status, body = post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Привет"}],
                                                       "max_tokens": 8, "temperature": 0, "stream": True})
    assert status == 200
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                   for e in body.split("\n\n") if e.startswith("data: {"))
    assert text == answer, (text, answer)
    status, body = post(port, "/v1/completions", {"prompt": "x", "bogus": 1})
    assert status == 400 and json.loads(body)["error"]["param"] == "bogus", body
    # Three clients at once (decoded together: --batch 4 by default), each with its own seed and length.
    results = [None] * 3
    start = threading.Barrier(3)

    def ask(i):
        start.wait()
        results[i] = post(port, "/v1/completions", {"prompt": "Жили-были " * (i + 1), "max_tokens": 20 + 10 * i,
                                                    "temperature": 0.8, "seed": i})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        usage = json.loads(body)["usage"]
        assert 0 < usage["completion_tokens"] <= 20 + 10 * i, usage
    print("plain HTTP: chat, stream, 400, three clients at once: ok")


def check_openai(port):
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
    models = client.models.list()
    name = models.data[0].id
    chat = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Привет"}],
                                          max_tokens=10, temperature=0)
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.completion_tokens == len(chat.choices[0].message.content) or chat.usage.completion_tokens > 0
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Привет"}], max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True}) if c.choices]
    assert "".join(pieces) == chat.choices[0].message.content, (pieces, chat.choices[0].message.content)
    completion = client.completions.create(model=name, prompt="Жили-были", max_tokens=5, temperature=0)
    assert completion.usage.completion_tokens == 5
    two = client.completions.create(model=name, prompt="Жили-были", max_tokens=5, temperature=0.9, seed=3, n=2)
    assert [c.index for c in two.choices] == [0, 1] and two.usage.completion_tokens <= 10, two
    # The conversation's next turn: its first turn comes from the server's prompt cache (--prompt-cache, on by
    # default), though another prompt came in between.
    turn = client.chat.completions.create(
        model=name, max_tokens=5, temperature=0,
        messages=[{"role": "user", "content": "Привет"},
                  {"role": "assistant", "content": chat.choices[0].message.content},
                  {"role": "user", "content": "Как дела?"}])
    cached = turn.usage.prompt_tokens_details.cached_tokens
    assert chat.usage.prompt_tokens <= cached < turn.usage.prompt_tokens, (cached, chat.usage, turn.usage)
    try:
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}], n=17)
        raise AssertionError("n=17 was accepted")
    except openai.BadRequestError as e:
        assert "'n'" in str(e), e
    print(f"openai {openai.__version__}: models, chat, stream, completions, n = 2, cached_tokens, BadRequestError: ok")


def stop_server(proc):
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    rc = proc.wait(timeout=30)
    assert rc == 0 and "stopped after" in rest, (rc, rest)
    print("SIGINT: stopped cleanly")


def check_chat_pty(tinylm, model):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(tinylm, [tinylm, "chat", "--model", model, "--max-tokens", "6", "--temperature", "0"])
    seen = b""

    def wait_for(pattern, timeout=60):
        nonlocal seen
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pattern in seen:
                seen = seen[seen.index(pattern) + len(pattern):]
                return
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        raise AssertionError(f"did not see {pattern!r}; got {seen[-300:]!r}")

    wait_for(b"> ")
    time.sleep(0.2)
    os.write(fd, "Привет\r".encode())
    wait_for(b"> ")
    time.sleep(0.2)
    os.write(fd, b"/reset\r")
    wait_for(b"(conversation forgotten)")
    wait_for(b"> ")
    status = None
    for attempt in range(2):
        # Ctrl-D. Once (not reproduced since) a CI run hung here with no output: the wait is bounded, and a second
        # Ctrl-D is tried, as a user would press it again, with a note in the output so a recurrence is visible.
        time.sleep(0.2)  # as a user types after the prompt appears: libedit has set its terminal mode
        os.write(fd, b"\x04")
        deadline = time.time() + 20
        while status is None and time.time() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    pass
        if status is not None:
            break
        print(f"note: chat did not leave within 20 s of Ctrl-D (attempt {attempt + 1}); output since: {seen[-300:]!r}")
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"chat did not leave on Ctrl-D; output since the last prompt: {seen[-300:]!r}")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("chat in a pty: answer, /reset, Ctrl-D: ok")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tinylm", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--openai", action="store_true")
    a = p.parse_args()
    proc, port = start_server(a.tinylm, a.model)
    try:
        check_openai(port) if a.openai else check_plain(port)
    finally:
        stop_server(proc)
    if not a.openai:
        check_chat_pty(a.tinylm, a.model)


if __name__ == "__main__":
    main()
