"""Rebuilds src/ops/calibration/corpus.txt, the bundled calibration text that
`llmtool quantize gptq|awq` uses without `--calib`, byte for byte, from pinned
Debian packages and one pinned crate. docs/CALIBRATION.md says what each part
is and under which license; src/ops/calibration/CORPUS-LICENSES.txt carries
the notices those licenses ask for.

    python tests/oracle/make_calibration_corpus.py [--check] [DOWNLOAD_DIR]

DOWNLOAD_DIR (default target/llmtool-cache/calib-corpus) receives the .deb
files (`apt-get download NAME=VERSION` on Debian 12 "bookworm", after an
`apt-get update`, when absent;
python3.11-doc is a security update, so once a newer one replaces it the
pinned file is found in Debian's snapshot archive by its name and sha256);
the crate comes from cargo's cache (`cargo fetch` puts it there: Cargo.lock
pins it). Every archive is checked against its sha256 before use. Needs only
the Python standard library and dpkg-deb. `--check` compares instead of
writing and exits 1 on a difference.

Documents are separated by two blank lines; inside a document runs of blank
lines are collapsed to one, so the separator is unambiguous.
"""
import glob
import gzip
import hashlib
import html.parser
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "src", "ops", "calibration", "corpus.txt")

# name -> (version, file name as apt-get download writes it, sha256)
DEBS = {
    "python3.11-doc": (
        "3.11.2-6+deb12u9",
        "python3.11-doc_3.11.2-6+deb12u9_all.deb",
        "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
    ),
    "sword-text-web": (
        "426.0-1",
        "sword-text-web_426.0-1_all.deb",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
    ),
    "sword-text-sparv": (
        "2.60-1",
        "sword-text-sparv_2.60-1_all.deb",
        "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
    ),
    "dict-devil": (
        "1.0-13.1",
        "dict-devil_1.0-13.1_all.deb",
        "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154",
    ),
    "dict-elements": (
        "20001107-a-9.1",
        "dict-elements_20001107-a-9.1_all.deb",
        "c840ae31017fca01e2d56e178b8d18ade279d24f41d7a285c6150a233f730ffa",
    ),
}
# The sha256 is Cargo.lock's checksum for half 2.7.1.
CRATE = ("half-2.7.1.crate", "6ea2d84b969582b4b1864a92dc5d27cd2b77b622a8d79306834f1be5ba20d84b")

PYDOC = "usr/share/doc/python3.11/html/"
# Python documentation pages, in corpus order: tutorial prose with code,
# floating-point arithmetic, the FAQs (question and answer), a howto.
PYDOC_PAGES = [
    "tutorial/controlflow.html",
    "tutorial/datastructures.html",
    "tutorial/floatingpoint.html",
    "faq/general.html",
    "faq/design.html",
    "howto/sorting.html",
]
# (package, module directory, testament, OSIS book name, title)
WEB = "usr/share/sword/modules/texts/ztext/engWEB2015eb/"
SPARV = "usr/share/sword/modules/texts/ztext/spaRV1909eb/"
BOOKS = [
    ("sword-text-web", WEB, "ot", "Ruth", "The Book of Ruth (World English Bible)"),
    ("sword-text-web", WEB, "ot", "Jonah", "The Book of Jonah (World English Bible)"),
    ("sword-text-web", WEB, "ot", "Esth", "The Book of Esther (World English Bible)"),
    ("sword-text-sparv", SPARV, "ot", "Ruth", "El libro de Rut (Reina-Valera 1909)"),
    ("sword-text-sparv", SPARV, "ot", "Jonah", "El libro de Jonás (Reina-Valera 1909)"),
]
DEVIL_BYTES = 45_000  # Bierce's preface and the entries that fit, whole
# Kominek's 2000 data ends at element 109; Debian added 110-118 in 2009 with
# text from Wikipedia (CC BY-SA). Stopping at fermium keeps well clear of them.
ELEMENTS_MAX = 100
HALF_FILES = ["src/bfloat/convert.rs", "src/binary16/arch.rs"]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fetch_debs(dl):
    os.makedirs(dl, exist_ok=True)
    paths = {}
    for name, (version, fname, digest) in DEBS.items():
        path = os.path.join(dl, fname)
        if not os.path.exists(path):
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=dl, check=True)
        if sha256(path) != digest:
            sys.exit(f"{path}: sha256 differs from the pinned {digest}")
        paths[name] = path
    return paths


def find_crate():
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    for path in sorted(glob.glob(os.path.join(home, "registry", "cache", "*", CRATE[0]))):
        if sha256(path) == CRATE[1]:
            return path
    sys.exit(f"{CRATE[0]} with sha256 {CRATE[1]} is not in cargo's cache: run `cargo fetch`")


def clean(text):
    """Trailing spaces off, runs of blank lines to one, one final newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.strip("\n") + "\n"


class HtmlText(html.parser.HTMLParser):
    """Readable text of a Sphinx page's main body: each block element is a
    paragraph, <pre> keeps its layout, the permalink marks are dropped."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "div",
              "section", "blockquote", "table", "ul", "ol", "dl"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paras = []
        self.buf = []
        self.divs = 0  # open <div>s from <div role="main"> on; 0 = outside it
        self.headerlink = False  # inside a heading's permalink mark
        self.nav = False  # inside the page's table of contents
        self.bullet = False  # the next paragraph is a list item
        self.pre = False

    def flush(self):
        text = "".join(self.buf)
        self.buf = []
        if self.pre:
            text = text.strip("\n")
        else:
            text = re.sub(r"\s+", " ", text).strip()
        if text:
            self.paras.append("* " + text if self.bullet else text)
            self.bullet = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and (self.divs or attrs.get("role") == "main"):
            self.divs += 1
        if tag == "nav":
            self.nav = True
        if not self.divs or self.nav:
            return
        if tag == "a" and "headerlink" in (attrs.get("class") or ""):
            self.headerlink = True
        # A footnote's label ("[1]") stays on the line of its text.
        label = tag == "p" and re.fullmatch(r"\s*\[\d+\]\s*", "".join(self.buf))
        if tag in self.BLOCKS and not label:
            self.flush()
        if label:
            self.buf.append(" ")
        if tag == "pre":
            self.pre = True
        elif tag == "li":
            self.bullet = True
        elif tag in ("td", "th") and self.buf:
            self.buf.append(" | ")

    def handle_endtag(self, tag):
        if tag == "nav":
            self.nav = False
        elif self.divs and not self.nav:
            if tag == "a":
                self.headerlink = False
            if tag in self.BLOCKS:
                self.flush()
            if tag == "pre":
                self.pre = False
        if tag == "div" and self.divs:
            self.divs -= 1

    def handle_data(self, data):
        if self.divs and not (self.nav or self.headerlink):
            self.buf.append(data)

    def text(self):
        self.flush()
        return clean("\n\n".join(self.paras))


def pydoc_pages(root):
    docs = []
    for page in PYDOC_PAGES:
        parser = HtmlText()
        with open(os.path.join(root, PYDOC, page), encoding="utf-8") as f:
            parser.feed(f.read())
        docs.append((page, parser.text()))
    return docs


def sword_book(module_dir, testament, book):
    """One book (by OSIS name) of a zText module (BlockType=BOOK: one zlib
    block per book, index entries of three little-endian u32: offset, size,
    unpacked size), its OSIS markup reduced to chapter numbers, paragraphs,
    headings and verse text; footnotes are dropped."""
    with open(os.path.join(module_dir, f"{testament}.bzs"), "rb") as f:
        index = f.read()
    with open(os.path.join(module_dir, f"{testament}.bzz"), "rb") as f:
        data = f.read()
    for block in range(len(index) // 12):
        off, size, _ = struct.unpack_from("<III", index, block * 12)
        text = zlib.decompress(data[off:off + size]).decode("utf-8")
        if f'osisID="{book}.1"' in text:
            break
    else:
        sys.exit(f"{module_dir}: no block holds {book}")
    text = text[text.index("<chapter "):]
    # A footnote can stand between two words without a space of its own:
    # mark each one first (a lookahead on the lazy match would swallow the
    # text up to the next footnote that happens to precede a word).
    text = re.sub(r"<note\b.*?</note>", "\0", text, flags=re.S)
    text = re.sub(r"\0(?=<w\b)", " ", text).replace("\0", "")
    # A chapter's number opens its first paragraph.
    text = re.sub(r'<chapter [^>]*\bn="(\d+)"[^>]*sID[^>]*/>', r"\n\n[\1] ", text)
    text = re.sub(r"<title\b[^>]*>(.*?)</title>", r"\n\n\1\n\n", text, flags=re.S)
    text = re.sub(r'<div [^>]*type="x-p"[^>]*/>|<lb\b[^>]*/>|<l\b[^>]*/>', "\n\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if p]


def bible(roots):
    docs = []
    for package, module, testament, book, title in BOOKS:
        paras = sword_book(os.path.join(roots[package], module), testament, book)
        body = "\n\n".join(paras)
        docs.append((f"{package} {book}", clean(f"{title}\n\n{body}")))
    return docs


def dict_body(root, name, encoding):
    with gzip.open(os.path.join(root, "usr/share/dictd", f"{name}.dict.dz"), "rt", encoding=encoding) as f:
        return f.read()


def devil(root):
    text = dict_body(root, "devil", "utf-8")
    start = text.index("THE DEVIL'S DICTIONARY")
    body = text[start:].split("\n\n")
    kept, size = [], 0
    for para in body:
        # Stop at the first entry (a capitalised headword) that would overflow.
        if size + len(para) > DEVIL_BYTES and re.match(r"[A-Z][A-Z'-]+[,.]", para):
            break
        kept.append(para)
        size += len(para) + 2
    return [("Bierce's preface and entries", clean("\n\n".join(kept)))]


def elements(root):
    text = dict_body(root, "elements", "latin-1")  # ü in "Münzenberg"
    entries = []
    for entry in text.split("\n\n"):
        lines = entry.strip("\n").split("\n")
        number = next((l for l in lines if l.startswith("Atomic number:")), None)
        if number is None or int(number.split(":")[1]) > ELEMENTS_MAX:
            continue
        fields = [l for l in lines[1:] if re.match(r"[A-Z][A-Za-z ]+: ", l)]
        prose = " ".join(l.strip() for l in lines[1:] if l not in fields)
        entries.append("\n".join([lines[0]] + fields + ([prose] if prose else [])))
    head = "The chemical elements: symbol, atomic number, atomic weight and a short description."
    return [(f"elements 1-{ELEMENTS_MAX}", clean(head + "\n\n" + "\n\n".join(entries)))]


def half(crate):
    docs = []
    with tarfile.open(crate) as tar:
        for name in HALF_FILES:
            data = tar.extractfile(f"half-2.7.1/{name}").read().decode("utf-8")
            docs.append((name, clean(data)))
    return docs


def build(dl):
    debs = fetch_debs(dl)
    crate = find_crate()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for name, path in debs.items():
            roots[name] = os.path.join(tmp, name)
            subprocess.run(["dpkg-deb", "-x", path, roots[name]], check=True)
        parts = [
            ("python3.11-doc", pydoc_pages(roots["python3.11-doc"])),
            ("sword-text-*", bible(roots)),
            ("dict-devil", devil(roots["dict-devil"])),
            ("dict-elements", elements(roots["dict-elements"])),
            ("half", half(crate)),
        ]
    # Interleave domains so a prefix of the corpus is already mixed.
    order = []
    queues = [[(package, label, text) for label, text in docs] for package, docs in parts]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


def main():
    args = [a for a in sys.argv[1:] if a != "--check"]
    dl = args[0] if args else os.path.join(ROOT, "target", "llmtool-cache", "calib-corpus")
    docs = build(dl)
    data = "\n\n".join(text for _, _, text in docs).encode("utf-8")
    total = len(data)
    for package, label, text in docs:
        size = len(text.encode("utf-8"))
        print(f"{package:18} {label:32} {size:7} bytes {100 * size / total:5.1f}%", file=sys.stderr)
    print(f"{'total':51} {total:7} bytes sha256 {hashlib.sha256(data).hexdigest()}", file=sys.stderr)
    if "--check" in sys.argv:
        with open(OUT, "rb") as f:
            if f.read() != data:
                sys.exit(f"{OUT} differs from the rebuilt corpus")
        return
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
