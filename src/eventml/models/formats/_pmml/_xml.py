"""Safe XML parsing of PMML into a small element tree with line numbers.

We parse with the standard library's expat directly instead of adding ``defusedxml`` as a
dependency: PMML never needs a DOCTYPE, so the parser refuses any DOCTYPE, entity declaration or
external entity reference outright (its handlers raise), which rules out billion-laughs expansion
and external-entity reads before a single entity is expanded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.parsers import expat

from eventml.errors import ModelRejected, UnsupportedModel

PMML_NAMESPACE_PREFIX = "http://www.dmg.org/PMML-"


@dataclass(eq=False)
class Element:
    """One XML element: local tag name, attributes, children and its line in the document."""

    tag: str
    attrib: dict[str, str]
    line: int
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> Element | None:
        """Return the first child with this tag, or ``None``."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        """Return every child with this tag, in document order."""
        return [child for child in self.children if child.tag == tag]

    def elements(self) -> Iterator[Element]:
        """Children that carry model content (``Extension`` elements are skipped)."""
        return (child for child in self.children if child.tag != "Extension")

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return an attribute value, or ``default``."""
        return self.attrib.get(name, default)


class _Refused(Exception):
    """Raised from inside expat handlers; turned into :class:`ModelRejected`."""


def _refuse_doctype(*_args: object) -> None:
    raise _Refused(
        "a PMML document without a DOCTYPE (PMML never needs one; refused for safety)",
        "a DOCTYPE declaration",
    )


def _refuse_entity(*_args: object) -> None:
    raise _Refused(
        "a PMML document without entity declarations (refused for safety)",
        "an entity declaration",
    )


def _refuse_external(*_args: object) -> int:
    raise _Refused(
        "a PMML document without external entities (refused for safety)",
        "an external entity reference",
    )


def parse_xml(data: bytes, *, where: str) -> Element:
    """Parse PMML bytes into an :class:`Element` tree, refusing any DOCTYPE or entity."""
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    stack: list[Element] = []
    roots: list[Element] = []
    namespaces: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        namespace, _, local = name.rpartition("}")
        element = Element(local, dict(attrs), parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(element)
        else:
            roots.append(element)
            namespaces.append(namespace)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        expected, got = exc.args
        raise ModelRejected(f"expected {expected}, got {got}", where=where) from None
    except expat.ExpatError as exc:
        message = expat.errors.messages[exc.code] if exc.code else str(exc)
        raise ModelRejected(
            f"expected a well-formed PMML document, got {message} "
            f"(line {exc.lineno}, column {exc.offset})",
            where=where,
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ModelRejected(f"expected a PMML document, got {exc}", where=where) from exc
    root = roots[0]
    if root.tag != "PMML":
        raise ModelRejected(f"expected a <PMML> root element, got <{root.tag}>", where=where)
    if namespaces[0] and not namespaces[0].startswith(PMML_NAMESPACE_PREFIX):
        raise ModelRejected(
            f"expected the PMML namespace {PMML_NAMESPACE_PREFIX}4_x, got {namespaces[0]}",
            where=where,
        )
    return root


def unsupported(element: Element, *, where: str, detail: str = "") -> UnsupportedModel:
    """Build the load-time error for an element (or attribute value) we do not score."""
    what = f"{element.tag} {detail}" if detail else element.tag
    return UnsupportedModel(f"unsupported PMML element {what} (line {element.line})", where=where)


def missing_attribute(element: Element, name: str, *, where: str) -> ModelRejected:
    """Build the load-time error for a required attribute that is absent."""
    return ModelRejected(
        f"PMML element {element.tag} (line {element.line}) lacks the required attribute {name}",
        where=where,
    )
