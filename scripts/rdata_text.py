#!/usr/bin/env python3
"""Reads the character vectors of an R package's lazy-load data base (data/Rdata.rdx + .rdb) without R.

Used to extract Jane Austen's novels from Debian's r-cran-janeaustenr. Implements the subset of R's XDR
serialization those files use: vectors, pairlists, symbols, strings and attributes.
Usage: rdata_text.py DATA_DIR NAME...   (writes each named character vector to stdout, one element a line)
"""
import gzip
import struct
import sys
import zlib


class Reader:
    def __init__(self, data):
        self.d, self.p, self.refs = data, 0, []

    def int(self):
        v = struct.unpack_from(">i", self.d, self.p)[0]
        self.p += 4
        return v

    def header(self):
        assert self.d[:2] == b"X\n", "not an XDR serialization"
        self.p = 2
        version = self.int()
        self.int(), self.int()
        if version == 3:
            n = self.int()  # native encoding name
            self.p += n

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NILVALUE
            return None
        if kind == 255:  # REFSXP
            return self.refs[(flags >> 8) - 1]
        if kind == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.d[self.p:self.p + n].decode("utf-8", "replace")
            self.p += n
            return s
        if kind == 2:  # LISTSXP (pairlist): attributes, tag, car, cdr
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return [(tag, car)] + (cdr or [])
        if kind in (13, 10):  # INTSXP, LGLSXP
            n = self.int()
            v = list(struct.unpack_from(">%di" % n, self.d, self.p))
            self.p += 4 * n
        elif kind == 14:  # REALSXP
            n = self.int()
            v = list(struct.unpack_from(">%dd" % n, self.d, self.p))
            self.p += 8 * n
        elif kind in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.int()
            v = [self.item() for _ in range(n)]
        else:
            raise ValueError("unsupported R object type %d" % kind)
        if has_attr:
            attrs = dict(self.item() or [])
            if "names" in attrs and kind == 19:
                return dict(zip(attrs["names"], v))
        return v


def load(data):
    r = Reader(data)
    r.header()
    return r.item()


def main():
    base, names = sys.argv[1] + "/Rdata", sys.argv[2:]
    index = load(gzip.decompress(open(base + ".rdx", "rb").read()))
    blob = open(base + ".rdb", "rb").read()
    for name in names:
        offset, length = index["variables"][name]
        record = blob[offset:offset + length]
        # 4-byte big-endian uncompressed length, then a zlib stream (R's default lazy-load compression)
        lines = load(zlib.decompress(record[4:]))
        sys.stdout.write("\n".join(x or "" for x in lines) + "\n")


if __name__ == "__main__":
    main()
