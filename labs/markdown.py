"""A small, safe Markdown subset for lessons, drills and exercises, and the labs' fixes.

It lives in labs/ (below explainer/, which imports it as explainer.course.markdown too):
the course and the lab pages render with the same code. No Django here.

Why not a Markdown package: lessons need a dozen constructs, and a renderer that
escapes *everything* first and then adds only its own tags cannot be tricked into
emitting markup from the text (no raw HTML, no `javascript:` links, no attributes
but the ones written here). Instructors edit the files; learners never do.

Blocks: `## headings` (`#`..`####`; ids for the table of contents), paragraphs,
`-`/`*` bullet lists and `1.` numbered lists (a line indented two spaces or more
continues the item), `> quotes` (`> **Note**` ... becomes a callout; `> **Claim checked**:
“the claim”` becomes a "Common claim, checked" callout whose `Source: [title](url)` lines
are set apart as its sources), pipe tables
(`| a | b |` with a `|---|---|` line under the head), `---` rules, and fenced blocks:

    ```mermaid      a Mermaid diagram, rendered in the browser (securityLevel strict)
    ```diagram      one line naming a diagram the site generates (health_table, ...)
    ```yaml         any other language: a code block

Inline: `code`, **bold**, *italic*, [text](link) where link is a site path
(`/...`, `#...`) or http(s) URL (anything else keeps the text and drops the link).
Underscores are left alone: `round_robin` must stay one word.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Callable

FENCE = re.compile(r"^```\s*([A-Za-z0-9_-]*)\s*$")
HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*#*\s*$")
BULLET = re.compile(r"^[-*]\s+(.*)$")
NUMBERED = re.compile(r"^(\d{1,3})[.)]\s+(.*)$")
RULE = re.compile(r"^(-{3,}|\*{3,})\s*$")
TABLE_SEP = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[([^\]\n]+)\]\(([^()\s]+)\)")
BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
ITALIC = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
SAFE_URL = re.compile(r"^(/(?!/)|#|https?://)[^\s\"'<>`*]*$")
CALLOUTS = {"note": "note", "tip": "tip", "warning": "warning", "rule of thumb": "tip",
            "in numbers": "numbers", "try it": "tip", "claim checked": "claim"}
SOURCE_LINE = re.compile(r"^\s*Sources?:\s*(.+)$")

# name -> Mermaid source, or None when the name is unknown (then a visible error box).
DiagramSource = Callable[[str], "str | None"]


@dataclass
class Rendered:
    html: str
    toc: list[tuple[int, str, str]] = field(default_factory=list)  # (level, id, text)
    diagrams: list[str] = field(default_factory=list)  # names of generated diagrams used
    mermaid_blocks: list[str] = field(default_factory=list)  # every Mermaid source, in order


def slugify(text: str) -> str:
    text = re.sub(r"<[^>]+>", "", text)
    slug = re.sub(r"[^a-z0-9]+", "-", html.unescape(text).lower()).strip("-")
    return slug or "section"


def inline(text: str) -> str:
    """Escape, then add the few inline tags this module knows."""
    spans: list[str] = []

    def keep(m: re.Match) -> str:
        spans.append(f"<code>{html.escape(m.group(2).strip(), quote=True)}</code>")
        return f"\x00{len(spans) - 1}\x00"

    text = CODE_SPAN.sub(keep, text)
    text = html.escape(text, quote=True)

    def link(m: re.Match) -> str:
        label, url = m.group(1), html.unescape(m.group(2))
        if not SAFE_URL.match(url):
            return label
        href = html.escape(url, quote=True)
        external = url.startswith("http")
        rel = ' rel="noopener noreferrer" target="_blank"' if external else ""
        return f'<a href="{href}"{rel}>{label}</a>'

    text = LINK.sub(link, text)
    text = BOLD.sub(r"<strong>\1</strong>", text)
    text = ITALIC.sub(r"<em>\1</em>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    parts = re.split(r"(?<!\\)\|", line)
    return [p.strip().replace("\\|", "|") for p in parts]


# lang -> a function from the block's text to trusted HTML (built with escaping by its
# module), or None when the text names nothing it knows (then a visible error box).
BlockSource = Callable[[str], "str | None"]


class _Renderer:
    def __init__(self, diagrams: DiagramSource | None, heading_offset: int,
                 blocks: "dict[str, BlockSource] | None" = None):
        self.diagrams = diagrams
        self.blocks = blocks or {}
        self.offset = heading_offset
        self.out: list[str] = []
        self.result = Rendered("")
        self.ids: set[str] = set()

    # -- blocks ----------------------------------------------------------------------

    def render(self, text: str) -> Rendered:
        lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
        i = 0
        para: list[str] = []

        def flush() -> None:
            if para:
                self.out.append(f"<p>{inline(' '.join(s.strip() for s in para))}</p>")
                para.clear()

        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            fence = FENCE.match(stripped)
            if fence and stripped.startswith("```"):
                flush()
                body = []
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                i += 1  # the closing fence (or the end)
                self.fenced(fence.group(1).lower(), "\n".join(body))
                continue
            if not stripped:
                flush()
                i += 1
                continue
            heading = HEADING.match(stripped)
            if heading:
                flush()
                self.heading(len(heading.group(1)), heading.group(2))
                i += 1
                continue
            if RULE.match(stripped):
                flush()
                self.out.append("<hr>")
                i += 1
                continue
            if stripped.startswith(">"):
                flush()
                quote = []
                while i < len(lines) and lines[i].strip().startswith(">"):
                    quote.append(re.sub(r"^\s*>\s?", "", lines[i]))
                    i += 1
                self.quote(quote)
                continue
            if stripped.startswith("|") and i + 1 < len(lines) and TABLE_SEP.match(lines[i + 1].strip()):
                flush()
                rows = [lines[i]]
                i += 2
                while i < len(lines) and lines[i].strip().startswith("|"):
                    rows.append(lines[i])
                    i += 1
                self.table(rows)
                continue
            if BULLET.match(stripped) or NUMBERED.match(stripped):
                flush()
                i = self.list_block(lines, i)
                continue
            para.append(line)
            i += 1
        flush()
        self.result.html = "\n".join(self.out)
        return self.result

    def heading(self, level: int, text: str) -> None:
        level = min(6, max(2, level + self.offset))
        body = inline(text)
        base = slugify(body)
        anchor, n = base, 2
        while anchor in self.ids:
            anchor, n = f"{base}-{n}", n + 1
        self.ids.add(anchor)
        self.result.toc.append((level, anchor, html.unescape(re.sub(r"<[^>]+>", "", body))))
        self.out.append(f'<h{level} id="{anchor}">{body}</h{level}>')

    def fenced(self, lang: str, body: str) -> None:
        if lang in self.blocks:
            made = self.blocks[lang](body.strip())
            if made is None:
                self.out.append(f'<p class="diagram-error">unknown {html.escape(lang)} block '
                                f'{html.escape(body.strip())}</p>')
            else:
                self.out.append(made)
            return
        if lang == "mermaid":
            self.result.mermaid_blocks.append(body)
            self.out.append('<figure class="diagram-box"><pre class="mermaid">'
                            f"{html.escape(body)}</pre></figure>")
            return
        if lang == "diagram":
            name = body.strip().split("\n")[0].strip()
            caption = " ".join(body.strip().split("\n")[1:]).strip()
            source = self.diagrams(name) if self.diagrams else None
            self.result.diagrams.append(name)
            if source is None:
                self.out.append(f'<p class="diagram-error">unknown diagram {html.escape(name)!s}</p>')
                return
            self.result.mermaid_blocks.append(source)
            cap = f"<figcaption>{inline(caption)}</figcaption>" if caption else ""
            self.out.append(f'<figure class="diagram-box generated" data-diagram="{html.escape(name)}">'
                            f'<pre class="mermaid">{html.escape(source)}</pre>{cap}</figure>')
            return
        cls = f' class="lang-{lang}"' if lang else ""
        self.out.append(f"<pre class=\"code\"><code{cls}>{html.escape(body)}</code></pre>")

    def quote(self, lines: list[str]) -> None:
        first = lines[0].strip() if lines else ""
        m = re.match(r"^\*\*([^*]+)\*\*[:.]?\s*(.*)$", first)
        kind = CALLOUTS.get(m.group(1).strip().lower().rstrip(":")) if m else None
        inner = _Renderer(self.diagrams, self.offset, self.blocks)
        inner.ids = self.ids
        if kind == "claim":
            self.claim(m.group(2), lines[1:], inner)
        elif kind:
            title = inline(m.group(1).strip().rstrip(":"))
            rest = [m.group(2)] + lines[1:] if m.group(2) else lines[1:]
            body = inner.render("\n".join(rest)).html
            self.out.append(f'<aside class="callout callout-{kind}"><p class="callout-title">'
                            f"{title}</p>{body}</aside>")
        else:
            body = inner.render("\n".join(lines)).html
            self.out.append(f"<blockquote>{body}</blockquote>")
        self.result.mermaid_blocks += inner.result.mermaid_blocks
        self.result.diagrams += inner.result.diagrams

    def claim(self, claim: str, lines: list[str], inner: "_Renderer") -> None:
        """`> **Claim checked**: the claim` then the fact, and `Source: [title](url)` lines."""
        sources = [SOURCE_LINE.match(line).group(1) for line in lines if SOURCE_LINE.match(line)]
        body = inner.render("\n".join(line for line in lines if not SOURCE_LINE.match(line))).html
        cited = "".join(f'<p class="claim-source">Source: {inline(src)}</p>' for src in sources)
        self.out.append('<aside class="callout callout-claim" aria-label="Common claim, checked">'
                        '<p class="callout-title">Common claim, checked: '
                        f"{inline(claim.strip())}</p>{body}{cited}</aside>")

    def table(self, rows: list[str]) -> None:
        head = _cells(rows[0])
        out = ['<div class="table-wrap"><table class="md-table"><thead><tr>']
        out += [f"<th scope=\"col\">{inline(c)}</th>" for c in head]
        out.append("</tr></thead><tbody>")
        for row in rows[1:]:
            cells = _cells(row)
            cells += [""] * (len(head) - len(cells))
            out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells[:len(head)])
                       + "</tr>")
        out.append("</tbody></table></div>")
        self.out.append("".join(out))

    def list_block(self, lines: list[str], i: int) -> int:
        first = lines[i].strip()
        ordered = bool(NUMBERED.match(first)) and not BULLET.match(first)
        items: list[list[str]] = []
        start = NUMBERED.match(first).group(1) if ordered else None
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            marker = (NUMBERED if ordered else BULLET).match(stripped)
            if marker and not line.startswith("  "):
                items.append([marker.group(2) if ordered else marker.group(1)])
                i += 1
                continue
            if stripped and line.startswith("  ") and items:
                items[-1].append(stripped)
                i += 1
                continue
            break
        tag = "ol" if ordered else "ul"
        attr = f' start="{int(start)}"' if ordered and start and int(start) != 1 else ""
        body = "".join(f"<li>{inline(' '.join(item))}</li>" for item in items)
        self.out.append(f"<{tag}{attr}>{body}</{tag}>")
        return i


def render(text: str, diagrams: DiagramSource | None = None, heading_offset: int = 0,
           blocks: "dict[str, BlockSource] | None" = None) -> Rendered:
    """Markdown subset -> HTML in which every tag and attribute was written by this module
    (or by a `blocks` function, which escapes what it takes from files)."""
    return _Renderer(diagrams, heading_offset, blocks).render(text or "")


def render_inline(text: str) -> str:
    return inline(text or "")
