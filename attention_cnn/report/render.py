"""Rendering the report's blocks (:mod:`attention_cnn.report.document`): Markdown that references the figure
files, and one self-contained HTML page with every figure embedded. Pure functions of the blocks."""
from __future__ import annotations

import base64
import html
from typing import Sequence

from attention_cnn.report.document import TITLE, Block, Bullets, Figure, Heading, Para, Table


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown with figures referenced as relative paths (figures/x.png)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = []
            if b.caption:
                lines += [f"*{b.caption}*", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.path})")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {type(b).__name__}")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape text; `backticked` parts become <code>."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: keep them literally
        return html.escape(text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1rem}
caption{text-align:left;font-style:italic;padding-bottom:0.3rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left}
th{background:#f2f2f2}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1rem 0}
img{max-width:100%;height:auto}
figcaption{font-size:0.9rem;color:#555}
code{background:#f4f4f4;padding:0 0.2rem}
""".strip()


def render_html(blocks: Sequence[Block], images: dict[str, bytes], title: str = TITLE) -> str:
    """A self-contained HTML5 page; every figure is embedded as a data:image/png URI."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{_inline_html(i)}</li>" for i in b.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            cap = f"<caption>{_inline_html(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            rows = "\n".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table>")
        elif isinstance(b, Figure):
            if b.path not in images:
                raise ValueError(f"no image data for {b.path}")
            data = base64.b64encode(images[b.path]).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption, quote=True)}">'
                f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>"
            )
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {type(b).__name__}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
