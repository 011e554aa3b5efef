"""An e-mail's words for a bot: HTML turned into plain text, quoted history and the
signature cut away. Pure functions over strings; the stdlib's HTML parser, no markup kept.

The stripping is a heuristic (mail programs quote in their own ways); the providers'
own stripped text (Mailgun's `stripped-text`, Postmark's `StrippedTextReply`) is used
when they send it, and the full body is always kept for agents beside the stripped one.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Never rendered: scripts and styles are dropped with their content, as is the head.
_SKIPPED = frozenset({"script", "style", "head", "title", "template", "noscript", "svg"})
# Elements that start a paragraph (a blank line) or only a new line; breaks next to each
# other merge into the larger, so nested blocks do not pile up blank lines.
_PARAGRAPHS = frozenset({
    "p", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr",
})  # fmt: skip
_LINES = frozenset({"div", "br", "tr", "li", "section", "article", "header", "footer", "dd"})
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base"})
# Quoted history in HTML mail: <blockquote>, and the wrappers Gmail, Yahoo and
# Outlook/Thunderbird put around a quoted reply.
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "divRplyFwdMsg")


class _Text(HTMLParser):
    def __init__(self, drop_quotes: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.drop_quotes = drop_quotes
        self.parts: list[str | int] = []  # text, or a break (1: new line, 2: paragraph)
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, hidden by it)
        self.hidden = 0

    def _break(self, tag: str) -> None:
        if tag in _PARAGRAPHS:
            self.parts.append(2)
        elif tag in _LINES:
            self.parts.append(1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.hidden:
            self._break(tag)
        if tag == "li" and not self.hidden:
            self.parts.append("- ")
        if tag in _VOID:
            return
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        element_id = attributes.get("id") or ""
        quoted = self.drop_quotes and (
            tag == "blockquote" or any(c in classes or c in element_id for c in _QUOTE_CLASSES)
        )
        hides = tag in _SKIPPED or quoted
        self.stack.append((tag, hides))
        self.hidden += hides

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        # Close up to the matching open tag: mail HTML is often not well formed.
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                for _, hides in self.stack[index:]:
                    self.hidden -= hides
                del self.stack[index:]
                break
        if not self.hidden:
            self._break(tag)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(" ".join(data.split("\n")))

    def text(self) -> str:
        out: list[str] = []
        pending = 0
        for part in self.parts:
            if isinstance(part, int):
                pending = max(pending, part)
            elif part.strip() or not pending:
                if pending and out:
                    out.append("\n" * pending)
                pending = 0
                out.append(part)
        return "".join(out)


def html_to_text(html: str, *, drop_quotes: bool = False) -> str:
    """The text a person reads in `html`: block elements on lines of their own, no
    script, style or markup; with `drop_quotes`, quoted history left out."""
    parser = _Text(drop_quotes)
    parser.feed(html)
    parser.close()
    return tidy(parser.text())


def tidy(text: str) -> str:
    """Collapse runs of spaces and of blank lines; lines keep their order."""
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# "On Thu, 1 Jan 2026 at 09:00, Dana <dana@example.net> wrote:" — one line, or wrapped
# over two by the mail program — and the same line of the mail programs' other common
# languages (German, French, Spanish, Italian, Dutch, Portuguese).
_ON_WROTE = re.compile(
    r"^\s*(On\b.{0,300}\bwrote|Am\b.{0,300}\bschrieb.{0,100}|Le\b.{0,300}\ba écrit\s?"
    r"|El\b.{0,300}\bescribió|Il\b.{0,300}\bha scritto|Op\b.{0,300}\bschreef"
    r"|Em\b.{0,300}\bescreveu):\s*$",
    re.IGNORECASE | re.DOTALL,
)
_OPENERS = ("on ", "am ", "le ", "el ", "il ", "op ", "em ")
_ORIGINAL = re.compile(
    r"^\s*(-{2,}\s*Original Message\s*-{2,}|_{10,}|-{2,}\s*Forwarded message\s*-{2,})\s*$",
    re.IGNORECASE,
)
_OUTLOOK_HEADER = re.compile(r"^\s*From:\s.+", re.IGNORECASE)
_SIGNATURE = re.compile(r"^-- ?$")  # RFC 3676 §4.3: "-- " alone on a line
_MOBILE = re.compile(r"^\s*Sent from my \w+", re.IGNORECASE)


def strip_reply(text: str) -> str:
    """The new part of a reply: everything before the quoted history ("On … wrote:",
    an "Original Message" line, an Outlook header block) and the signature ("-- "),
    without ">"-quoted lines."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        two = f"{line} {lines[index + 1]}" if index + 1 < len(lines) else line
        if _ON_WROTE.match(line) or (
            line.lstrip()[:3].lower() in _OPENERS and _ON_WROTE.match(two)
        ):
            break
        if _ORIGINAL.match(line) or _SIGNATURE.match(line) or _MOBILE.match(line):
            break
        if _OUTLOOK_HEADER.match(line) and (not kept or not kept[-1].strip()):
            break  # a "From:" header block after a blank line starts a quoted mail
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return tidy("\n".join(kept))


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to `limit` characters (an ellipsis last), and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + "…", True
