#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus, made from the golden vectors of docs/PROTOCOL.md
(the blocks marked `golden:`), into the directory given: one subdirectory per target.

    python3 rpc-core/fuzz/seeds.py <dir>
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFACE = bytes([0x89, 0x52, 0x50, 0x43, 0x0D, 0x0A, 0x01, 0x00])
# The frames a client sends, in an order that makes a conversation.
CLIENT_FRAMES = ["settings", "request", "stream_open", "stream_message", "window_update",
                 "connection_window", "half_close", "ping", "cancel"]


def golden():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    blocks = re.findall(r"<!-- golden: (\w+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex(" ".join(body.split())) for name, body in blocks}


def strip_length(frame):
    """The payload: the frame without its varint length prefix."""
    at = 0
    while frame[at] & 0x80:
        at += 1
    return frame[at + 1:]


def main():
    out = pathlib.Path(sys.argv[1])
    vectors = golden()
    frames = {name: data for name, data in vectors.items() if name != "preface"}
    if len(frames) < 10:
        sys.exit(f"only {len(frames)} golden frames found in docs/PROTOCOL.md")
    seeds = {"frame_decoder": [], "header": [], "server_connection": []}
    everything = b"".join(frames.values())
    for control in (0x00, 0x07, 0x40, 0xC0 | 0x3F):
        preface = PREFACE if control & 0x80 else b""
        seeds["frame_decoder"].append(bytes([control]) + preface + everything)
    for data in frames.values():
        seeds["frame_decoder"].append(bytes([0xC0]) + PREFACE + data)
        seeds["header"].append(strip_length(data))
    conversation = b"".join(vectors[name] for name in CLIENT_FRAMES)
    for control in (0, 3, 255):
        seeds["server_connection"].append(bytes([control]) + conversation)
    for name in CLIENT_FRAMES:
        seeds["server_connection"].append(bytes([0]) + vectors[name])
    for target, inputs in seeds.items():
        directory = out / target
        directory.mkdir(parents=True, exist_ok=True)
        for n, data in enumerate(inputs):
            (directory / f"golden-{n:02}").write_bytes(data)
    print(f"seeds: {', '.join(f'{t} {len(i)}' for t, i in seeds.items())}")


if __name__ == "__main__":
    main()
