"""Small SVG drawings with openclipart's metadata (a work's title, description and keywords, and an author
whose name is a ``dc:title`` too), for the openclipart builder's tests."""

from __future__ import annotations

from pathlib import Path


def svg(title: str = "", description: str = "", keywords: tuple[str, ...] = (), author: str = "Ann Artist",
        width: int = 40, height: int = 20, colour: str = "red") -> str:  # fmt: skip
    lis = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return f"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
     width="{width}" height="{height}">
  <metadata><rdf:RDF><cc:Work rdf:about="">
    <dc:title>{title}</dc:title><dc:description>{description}</dc:description>
    <dc:subject><rdf:Bag>{lis}</rdf:Bag></dc:subject>
    <dc:creator><cc:Agent><dc:title>{author}</dc:title></cc:Agent></dc:creator>
  </cc:Work></rdf:RDF></metadata>
  <rect x="0" y="0" width="{width}" height="{height}" fill="{colour}"/>
</svg>"""


def write_svg(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
