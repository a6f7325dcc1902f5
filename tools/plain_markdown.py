"""MyST Markdown -> plain Jupyter Markdown, for the .ipynb that readers open in Colab.

The book renders MyST (roles, directives, citations); Colab and Jupyter show it raw. Each markdown
cell of a generated notebook is rewritten so that it reads the same without Sphinx:

- ``{cite:p}`key``` -> "([Author & Author, 2024](references page))", ``{cite:t}`` -> "Author et al. (2023)";
- ``:::{note}`` and ```` ```{admonition} Title ```` (and the other admonitions) -> ``>`` quotes;
- ``{doc}``, ``{ref}``, ``{numref}`` and relative ``.md`` links -> links to the published book;
- ``{figure}``/``{image}`` and relative images -> images from the repository at the course's ref;
- ``{math}``, ``{eq}``, ``{glue}``, ``{sub}``, ``{sup}``, ``{kbd}``, ``{term}``, ``{abbr}``, labels
  ``(name)=`` and ``%`` comments -> their plain equivalents (or nothing).

Anything else MyST-only raises :class:`MystError` naming the file, so no raw markup reaches a reader;
:func:`leftovers` lists what a committed notebook still holds (the test of every .ipynb).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ADMONITIONS = {
    "note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important", "warning": "Warning",
    "caution": "Caution", "attention": "Attention", "danger": "Danger", "error": "Error",
    "seealso": "See also", "admonition": "", "margin": "", "sidebar": "", "epigraph": "", "topic": "",
}
CODE_DIRECTIVES = {"code", "code-block", "sourcecode"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<marks>`{3,}|~{3,}|:{3,})(?P<rest>.*)$")
DIRECTIVE = re.compile(r"^\{(?P<name>[\w:-]+)\}\s*(?P<args>.*)$")
ROLE = re.compile(r"\{(?P<name>[A-Za-z][\w:+-]*)\}`(?P<content>[^`]*)`")
TARGET = re.compile(r"^[ \t]*\((?P<label>[^()\s]+)\)=[ \t]*$")
EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)")
DOLLAR_LABEL = re.compile(r"^(?P<math>.*\$\$)[ \t]*\([\w.:-]+\)[ \t]*$")

LEFTOVER_PATTERNS = {
    "role": re.compile(r"\{[A-Za-z][\w:+-]*\}`"),
    "directive": re.compile(r"^[ \t]*(`{3,}|~{3,}|:{3,})\{", re.M),
    "colon fence": re.compile(r"^[ \t]*:{3,}[ \t]*$", re.M),
    "target": re.compile(r"^[ \t]*\([^()\s]+\)=[ \t]*$", re.M),
    "comment": re.compile(r"^%", re.M),
    "substitution": re.compile(r"\{\{[^{}]*\}\}"),
    "cell break": re.compile(r"^\+\+\+", re.M),
    "relative .md link": re.compile(r"\]\((?![a-z][\w+.-]*:|#)[^)\s]*\.md(#[^)\s]*)?\)"),
    "equation label": re.compile(r"\$\$[ \t]*\([\w.:-]+\)[ \t]*$", re.M),
}


class MystError(ValueError):
    """A MyST construct with no plain-Markdown form (the message names the file and what to do)."""


@dataclass(frozen=True)
class Site:
    """Where links go: the published book, the repository's files at the course's ref, the citations."""

    page_url: Callable[[str], str]  # repository path of a page ("book/ioi_task.md") -> its URL
    file_url: Callable[[str], str]  # repository path of a file -> a URL that serves it (images)
    references: str  # path of the references page ("book/references.md")
    citations: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (authors, year)
    labels: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # label -> (page, anchor, title)
    titles: dict[str, str] = field(default_factory=dict)  # page path -> its title


def _authors(field_text: str) -> str:
    """'Heimersheim, Stefan and Nanda, Neel' -> 'Heimersheim & Nanda'; three or more -> 'Wang et al.'."""
    names = [n.strip() for n in re.split(r"\s+and\s+", field_text.strip()) if n.strip()]
    surnames = []
    for name in names:
        if name.startswith("{") and name.endswith("}"):
            surnames.append(name[1:-1])  # a corporate author: {TransformerLens contributors}
        elif "," in name:
            surnames.append(name.split(",", 1)[0].strip())
        else:
            surnames.append(name.split()[-1])
    surnames = [re.sub(r"[{}\\]", "", s) for s in surnames]
    if len(surnames) >= 3:
        return f"{surnames[0]} et al."
    return " & ".join(surnames)


def _bib_fields(body: str) -> dict[str, str]:
    """The fields of one BibTeX entry body (after the key), values without their outer braces/quotes."""
    fields, i = {}, 0
    while True:
        match = re.compile(r"\s*,?\s*(\w+)\s*=\s*").match(body, i)
        if not match:
            return fields
        name, i = match.group(1).lower(), match.end()
        if body[i:i + 1] == "{":
            depth, j = 0, i
            while j < len(body):
                depth += {"{": 1, "}": -1}.get(body[j], 0)
                if depth == 0:
                    break
                j += 1
            fields[name], i = body[i + 1:j], j + 1
        elif body[i:i + 1] == "\"":
            j = body.index("\"", i + 1)
            fields[name], i = body[i + 1:j], j + 1
        else:
            value = re.compile(r"[^,}\s]+").match(body, i)
            if not value:
                return fields
            fields[name], i = value.group(0), value.end()


def read_bibliography(text: str) -> dict[str, tuple[str, str]]:
    """``key -> (authors, year)`` for every entry of a BibTeX file."""
    entries = {}
    for match in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", text):
        start, depth, j = match.end(), 1, match.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        fields = _bib_fields(text[start:j - 1])
        entries[match.group(1)] = (_authors(fields.get("author", fields.get("editor", "Anonymous"))),
                                   re.sub(r"[{}]", "", fields.get("year", "n.d.")))
    return entries


def anchor(label: str) -> str:
    """The HTML id Sphinx gives a label (docutils ``make_id``)."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def scan_pages(pages: dict[str, str]) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """Labels (``(name)=`` before a heading or a figure) and titles of the book's pages
    (``pages``: repository path -> Markdown text)."""
    labels, titles = {}, {}
    for path, text in pages.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if path not in titles and re.match(r"^# \S", line):
                titles[path] = line[2:].strip()
            target = TARGET.match(line)
            if target:
                following = next((l for l in lines[i + 1:] if l.strip()), "")
                heading = re.match(r"^#+\s+(.*)$", following)
                labels[target.group("label")] = (path, anchor(target.group("label")),
                                                 heading.group(1).strip() if heading else "")
    return labels, titles


class _Converter:
    def __init__(self, site: Site, source: str):
        self.site, self.source = site, source  # source: repository path of the .md

    def fail(self, what: str) -> MystError:
        return MystError(f"{self.source}: no plain-Markdown form for {what}: "
                         "rewrite it or teach tools/plain_markdown.py")

    def resolve(self, target: str) -> str:
        """A path relative to the current page (or '/'-rooted at the repository) -> repository path."""
        base = [] if target.startswith("/") else self.source.split("/")[:-1]
        parts = base + [p for p in target.lstrip("/").split("/")]
        out: list[str] = []
        for part in parts:
            if part == "..":
                if out:
                    out.pop()
            elif part not in ("", "."):
                out.append(part)
        return "/".join(out)

    # --- inline -----------------------------------------------------------------------------
    def cite(self, name: str, keys: str) -> str:
        refs = self.site.page_url(self.site.references)
        found = []
        for key in (k.strip() for k in keys.split(",") if k.strip()):
            if key not in self.site.citations:
                raise MystError(f"{self.source}: no entry {key!r} in the bibliography")
            found.append(self.site.citations[key])
        if name in ("cite:t", "cite:ts"):
            return " and ".join(f"[{authors} ({year})]({refs})" for authors, year in found)
        if name == "cite:year":
            return ", ".join(f"[{year}]({refs})" for _, year in found)
        return "(" + "; ".join(f"[{authors}, {year}]({refs})" for authors, year in found) + ")"

    def role(self, match: re.Match) -> str:
        name, content = match.group("name"), match.group("content")
        explicit = EXPLICIT.match(content)
        text, target = (explicit.group("text"), explicit.group("target")) if explicit else ("", content)
        if name in ("cite", "cite:p", "cite:ps", "cite:t", "cite:ts", "cite:year"):
            return self.cite(name, content)
        if name == "doc":
            page = self.resolve(target) + ".md"
            if page not in self.site.titles:
                raise MystError(f"{self.source}: {{doc}}`{content}` names no page of the book")
            return f"[{text or self.site.titles[page]}]({self.site.page_url(page)})"
        if name in ("ref", "numref"):
            if target not in self.site.labels:
                raise MystError(f"{self.source}: {{{name}}}`{content}` names no label of the book")
            page, hash_, title = self.site.labels[target]
            text = (text or title or target).replace("%s", "").strip()
            return f"[{text}]({self.site.page_url(page)}#{hash_})"
        if name == "eq":
            return f"({target})"
        if name == "math":
            return f"${content}$"
        if name.startswith("glue"):
            return f"`{target.split(':')[0]}`"  # the value is computed by a code cell of the notebook
        if name in ("sub", "sup", "kbd"):
            return f"<{name}>{content}</{name}>"
        if name in ("code", "samp", "file", "command", "program"):
            return f"`{content}`"
        if name in ("term", "abbr", "dfn"):
            return text or target
        if name == "download":
            return f"[{text or target}]({self.site.file_url(self.resolve(target))})"
        raise self.fail(f"the role {{{name}}}")

    def link(self, match: re.Match) -> str:
        url = match.group("url")
        if re.match(r"^[a-z][\w+.-]*:|^#", url):
            return match.group(0)
        path, _, hash_ = url.partition("#")
        repo_path = self.resolve(path)
        if match.group("bang"):
            new = self.site.file_url(repo_path)
        elif path.endswith(".md") and repo_path in self.site.titles:
            new = self.site.page_url(repo_path) + (f"#{hash_}" if hash_ else "")
        elif path.endswith(".md"):
            raise MystError(f"{self.source}: the link {url!r} names no page of the book")
        else:
            new = self.site.file_url(repo_path) + (f"#{hash_}" if hash_ else "")
        return f"{match.group('bang')}[{match.group('text')}]({new}{match.group('title') or ''})"

    def inline(self, line: str) -> str:
        line = ROLE.sub(self.role, line)
        if re.search(r"\{\{[^{}]*\}\}", line):
            raise self.fail("a substitution {{ ... }}")
        # links inside inline code are code: convert only the pieces between code spans
        pieces = re.split(r"((?<!`)`[^`\n]+`(?!`))", line)
        return "".join(piece if i % 2 else LINK.sub(self.link, piece) for i, piece in enumerate(pieces))

    # --- blocks -----------------------------------------------------------------------------
    def convert(self, text: str) -> str:
        return "\n".join(self.block(text.split("\n")))

    def block(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            fence = FENCE.match(line)
            if fence:
                marks, rest = fence.group("marks"), fence.group("rest").strip()
                end = i + 1
                while end < len(lines) and not re.match(
                        rf"^[ \t]*{re.escape(marks[0])}{{{len(marks)},}}[ \t]*$", lines[end]):
                    end += 1
                body = lines[i + 1:end]
                directive = DIRECTIVE.match(rest)
                if directive:
                    out.extend(self.directive(directive.group("name"), directive.group("args"), body))
                elif marks[0] == ":":
                    raise self.fail(f"the colon fence {line.strip()!r}")
                else:
                    out.extend([line, *body, lines[end] if end < len(lines) else marks])  # plain code
                i = end + 1
                continue
            if TARGET.match(line) or line.startswith("%"):
                i += 1
                continue
            label = DOLLAR_LABEL.match(line)
            out.append(self.inline(label.group("math") if label else line))
            i += 1
        return out

    @staticmethod
    def options(body: list[str]) -> tuple[dict[str, str], list[str]]:
        """Split a directive body into its options (``:key: value`` lines or a YAML block) and content."""
        options: dict[str, str] = {}
        if body and body[0].strip() == "---":
            end = next((j for j in range(1, len(body)) if body[j].strip() == "---"), 0)
            for line in body[1:end]:
                key, _, value = line.partition(":")
                options[key.strip()] = value.strip()
            body = body[end + 1:]
        while body and re.match(r"^\s*:[\w-]+:", body[0]):
            key, _, value = body[0].strip()[1:].partition(":")
            options[key] = value.strip()
            body = body[1:]
        while body and not body[0].strip():
            body = body[1:]
        return options, body

    def directive(self, name: str, args: str, body: list[str]) -> list[str]:
        options, content = self.options(body)
        if name in ADMONITIONS:
            title = self.inline(args) if args else ADMONITIONS[name]
            inner = self.block(content)
            quoted = ([f"> **{title}**", ">"] if title else []) + [f"> {l}".rstrip() for l in inner]
            return quoted
        if name == "dropdown":
            return [f"<details><summary>{self.inline(args) or 'Details'}</summary>", "", *self.block(content),
                    "", "</details>"]
        if name in ("figure", "image"):
            url = args if re.match(r"^[a-z][\w+.-]*:", args) else self.site.file_url(self.resolve(args))
            caption = " ".join(self.block(content)).strip()
            alt = options.get("alt", caption if name == "figure" else "")
            return [f"![{alt}]({url})"] + (["", f"*{caption}*"] if caption and name == "figure" else [])
        if name == "math":
            return ["$$", *content, "$$"]
        if name in CODE_DIRECTIVES:
            return [f"```{args}", *content, "```"]
        if name == "bibliography":
            return [f"The references are listed on the book's [references page]"
                    f"({self.site.page_url(self.site.references)})."]
        raise self.fail(f"the directive {{{name}}}")


def to_markdown(text: str, source: str, site: Site) -> str:
    """The plain-Markdown form of one MyST markdown cell of ``source`` (its repository path)."""
    return _Converter(site, source).convert(text)


def leftovers(markdown: str) -> list[str]:
    """The MyST-only constructs in one markdown cell (outside plain code blocks and inline code)."""
    kept, in_code, marks = [], False, ""
    for line in markdown.split("\n"):
        fence = FENCE.match(line)
        if in_code:
            if re.match(rf"^[ \t]*{re.escape(marks[0])}{{{len(marks)},}}[ \t]*$", line):
                in_code = False
            continue
        if fence and not fence.group("rest").strip().startswith("{") and fence.group("marks")[0] != ":":
            in_code, marks = True, fence.group("marks")
            continue
        kept.append(re.sub(r"(?<![`}])`[^`\n]+`(?!`)", "``", line))  # inline code, but not a role's
    text = "\n".join(kept)
    return [f"{kind}: {m.group(0).strip()!r}" for kind, pattern in LEFTOVER_PATTERNS.items()
            for m in pattern.finditer(text)]
