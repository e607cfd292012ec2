"""make msrv-check: the workspace's rust-version is at least what every
locked dependency declares (cargo metadata), so the README's minimum is
true. (clippy's incompatible_msrv lint checks our own code against it.)"""
import json
import subprocess
import sys


def version(text):
    """`1.89` and `1.89.0` alike: (1, 89, 0)."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


metadata = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(metadata["workspace_members"])
ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members}
if len(ours) != 1 or None in ours:
    sys.exit(f"msrv-check: workspace members declare {sorted(map(str, ours))}: want one rust-version")
declared = ours.pop()
needs = [
    (version(p["rust_version"]), p["name"], p["version"])
    for p in metadata["packages"]
    if p["id"] not in members and p.get("rust_version")
]
highest = max(needs)
if highest[0] > version(declared):
    sys.exit(
        f"msrv-check: {highest[1]} {highest[2]} needs Rust {'.'.join(map(str, highest[0]))}, "
        f"more than rust-version {declared}"
    )
print(f"msrv-check: rust-version {declared}; the most any locked dependency needs is "
      f"{'.'.join(map(str, highest[0]))} ({highest[1]} {highest[2]})")
