"""make walkthrough: the README's curl walkthrough and two-server story,
pasted as they are (debug build instead of release, to spare CI a build),
three times in a row each; every expected answer must appear."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def block(heading):
    """The indented code block that follows a heading."""
    section = README.split(heading, 1)[1]
    lines = section.split("\n")
    code, started = [], False
    for line in lines[1:]:
        if line.startswith("    "):
            started = True
            code.append(line[4:])
        elif started and line.strip():
            break
        elif started:
            code.append("")
    return "\n".join(code)


def runnable(script):
    script = script.replace("cargo build --release -p fedid-server -p fedid-cli",
                            "cargo build -q -p fedid-server -p fedid-cli")
    return f"cd {ROOT}\n" + script.replace("target/release", "target/debug")


one_server = runnable(block("## Using one server with curl"))
two_servers = runnable(block("## Using one server with curl")).split("cd \"$(mktemp -d)\"")[0] + \
    block("## The reset-and-revoke story on two local servers")
two_servers = two_servers.replace("target/release", "target/debug").replace(
    "cargo build --release", "cargo build -q")

EXPECTED = {
    "one server": (one_server, ['"state":"setup_required"', '"handle":"alice@localhost:8080"',
                                '{"items":[],"nextAfter":null}', '"code":"identity_not_set_up"',
                                '"code":"not_queued"', '"code":"unknown_recipient"', '"openapi":"3.1']),
    "two servers": (two_servers, ['"revocationsQueued":1', '"outcome":"delivered"',
                                  '"delivered":1', '{"items":[],"nextAfter":null}']),
}

failed = 0
for name, (script, wanted) in EXPECTED.items():
    for attempt in range(1, 4):
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=600)
        missing = [w for w in wanted if w not in done.stdout]
        if done.returncode != 0 or missing:
            failed += 1
            print(f"{name}, paste {attempt}: exit {done.returncode}, missing {missing}\n{done.stdout}\n{done.stderr[-2000:]}")
        else:
            print(f"{name}, paste {attempt}: every expected answer")
print(f"{6 - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
