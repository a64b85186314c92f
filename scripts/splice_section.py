#!/usr/bin/env python3
"""Replaces the text between two marker lines of a Markdown file, atomically.

    scripts/splice_section.py DOC NAME SECTION_FILE

DOC must hold `<!-- NAME:begin -->` and `<!-- NAME:end -->`; the lines
between them become SECTION_FILE's contents. Used by the `make bench`
scripts to regenerate generated sections of docs/benchmarks.md.
"""
import os
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    doc_path, name, section_path = sys.argv[1:]
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(doc_path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        sys.exit(f"splice_section: {doc_path} lacks the markers {begin} / {end}")
    with open(section_path) as f:
        section = f.read()
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    tmp = doc_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(head + begin + "\n" + section.rstrip("\n") + "\n" + end + tail)
    os.replace(tmp, doc_path)


if __name__ == "__main__":
    main()
