#!/usr/bin/env python3
"""Plain text of a SWORD zCom4 commentary module (e.g. Debian's sword-comm-tdavid, Spurgeon's Treasury of David),
without the SWORD library: the entries in canonical order, OSIS markup stripped, one paragraph per entry.

    python3 scripts/sword_text.py MODULE_DIR > out.txt

Format (zCom4 / zText4, BlockType=CHAPTER, CompressType=ZIP), for ot and nt:
  <t>.czs  per block: uint32 offset, uint32 compressed size, uint32 uncompressed size (little-endian) into <t>.czz
  <t>.czz  the blocks, each zlib-compressed: the entries' UTF-8 text, concatenated
  <t>.czv  per entry (verse): uint32 block, uint32 offset, uint32 size within the uncompressed block
"""
import html
import os
import re
import struct
import sys
import zlib


def entries(module, testament):
    def read(ext):
        path = os.path.join(module, testament + ext)
        return open(path, "rb").read() if os.path.exists(path) else b""

    idx, data, verses = read(".czs"), read(".czz"), read(".czv")
    blocks = {}

    def block(i):
        if i not in blocks:
            off, size, _ = struct.unpack_from("<III", idx, i * 12)
            blocks[i] = zlib.decompress(data[off : off + size])
        return blocks[i]

    for v in range(len(verses) // 12):
        b, off, size = struct.unpack_from("<III", verses, v * 12)
        if size == 0 or (b + 1) * 12 > len(idx):
            continue
        yield block(b)[off : off + size].decode("utf-8", "replace")


def plain(entry):
    text = re.sub(r"<(lb|p|/p|div|/div|br)\b[^>]*>", "\n", entry)
    text = html.unescape(re.sub(r"<[^>]*>", "", text))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def main():
    module = sys.argv[1]
    out = sys.stdout
    for testament in ("ot", "nt"):
        for e in entries(module, testament):
            p = plain(e)
            if p:
                out.write(p + "\n\n")


if __name__ == "__main__":
    main()
