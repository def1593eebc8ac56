"""The report as one document (sections, paragraphs, tables, figures) and its two renderings.

:mod:`w2sray.analysis.report` decides what the report says, once; :func:`render_markdown` and
:func:`render_html` only decide how it looks. All text in the model is plain: each renderer
escapes it for its own format.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Block",
    "BulletList",
    "Code",
    "Document",
    "Figure",
    "Item",
    "Link",
    "Paragraph",
    "Section",
    "Table",
    "render_html",
    "render_markdown",
]


@dataclass(frozen=True)
class Code:
    """Inline literal text (a run key, an error line)."""

    text: str


@dataclass(frozen=True)
class Link:
    """Inline link to a file beside the report."""

    text: str
    href: str


Inline = str | Code | Link


@dataclass
class Paragraph:
    """A paragraph; ``note`` marks explanatory text (smaller and grey in HTML)."""

    text: str
    note: bool = False


@dataclass
class Item:
    """A bullet; ``markdown_only`` for links to sibling files, which the self-contained HTML
    page (often opened away from them) leaves out."""

    parts: tuple[Inline, ...]
    markdown_only: bool = False


@dataclass
class BulletList:
    items: list[Item]


@dataclass
class Table:
    """Header and rows of cell text; ``legend``: notes shown under it, explaining its marks."""

    header: list[str]
    rows: list[list[str]]
    legend: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """A PNG written beside the report: linked from markdown, inlined in HTML."""

    path: Path
    alt: str


@dataclass
class Section:
    """A titled section; nested sections are one heading level deeper."""

    title: str
    blocks: list[Block] = field(default_factory=list)


Block = Paragraph | BulletList | Table | Figure | Section


@dataclass
class Document:
    title: str
    blocks: list[Block]


# --- markdown ---------------------------------------------------------------------------------


def _md(text: object) -> str:
    # Escape what breaks tables or turns into markup; GFM ignores intraword underscores. A
    # backslash is literal unless it precedes punctuation (or ends a line: a hard break).
    text = re.sub(r"\\(?=[!-/:-@\[-`{-~]|$)", r"\\\\", str(text))
    return re.sub(r"([|*`<>])", r"\\\1", text)


def _md_inline(parts: tuple[Inline, ...]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append("`" + part.text.replace("`", "'") + "`")  # a backtick would end the span
        elif isinstance(part, Link):
            out.append(f"[{_md(part.text)}]({part.href})")
        else:
            out.append(_md(part))
    return "".join(out)


def _md_blocks(blocks: list[Block], level: int) -> list[str]:
    # Each block is followed by a blank line.
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Section):
            lines += [f"{'#' * level} {_md(b.title)}", ""] + _md_blocks(b.blocks, level + 1)
        elif isinstance(b, Paragraph):
            lines += [_md(b.text), ""]
        elif isinstance(b, BulletList):
            lines += [f"- {_md_inline(i.parts)}" for i in b.items] + [""]
        elif isinstance(b, Table):
            lines += ["| " + " | ".join(_md(h) for h in b.header) + " |"]
            lines += ["|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in b.rows] + [""]
            lines += [x for note in b.legend for x in (_md(note), "")]
        elif isinstance(b, Figure):
            lines += [f"![{_md(b.alt)}]({b.path.name})", ""]
    return lines


def render_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured markdown; figures link to their PNG files."""
    return "\n".join([f"# {_md(doc.title)}", "", *_md_blocks(doc.blocks, 2)])


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #eee; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: .5em 0; }
code { background: #f5f5f5; padding: 0 .25em; }
.note { color: #555; font-size: .92em; }
"""


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_inline(parts: tuple[Inline, ...]) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"<code>{_h(part.text)}</code>")
        elif isinstance(part, Link):
            out.append(f'<a href="{_h(part.href)}">{_h(part.text)}</a>')
        else:
            out.append(_h(part))
    return "".join(out)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in t.header)
    body = "\n".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html_blocks(blocks: list[Block], level: int) -> list[str]:
    p: list[str] = []
    for b in blocks:
        if isinstance(b, Section):
            p += [f"<h{level}>{_h(b.title)}</h{level}>", *_html_blocks(b.blocks, level + 1)]
        elif isinstance(b, Paragraph):
            p.append(f'<p class="note">{_h(b.text)}</p>' if b.note else f"<p>{_h(b.text)}</p>")
        elif isinstance(b, BulletList):
            items = [f"<li>{_html_inline(i.parts)}</li>" for i in b.items if not i.markdown_only]
            p += ["<ul>", *items, "</ul>"] if items else []
        elif isinstance(b, Table):
            p += [_html_table(b), *(f'<p class="note">{_h(note)}</p>' for note in b.legend)]
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            p.append(f'<img src="data:image/png;base64,{data}" alt="{_h(b.alt)}">')
    return p


def render_html(doc: Document) -> str:
    """One self-contained page: inline CSS, PNGs as data URIs, no script, no external URL."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{_h(doc.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(doc.title)}</h1>",
    ]
    return "\n".join([*head, *_html_blocks(doc.blocks, 2), "</body>", "</html>", ""])
