"""Phoebus display files (``.bob``) written with ElementTree: the few widgets the screens use, with
their properties spelled as Phoebus's display model reads them (``display version="2.0.0"``).

Only what differs from a widget's default is written, so a file stays readable in a diff and every
property Phoebus adds later keeps its default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union
from xml.etree import ElementTree as ET

__all__ = ["Display", "color", "font", "open_display", "severity_rule", "write_pv", "write_xml"]

#: Widget type -> the model version this module writes its properties for (Phoebus 4.7).
VERSIONS = {
    "label": "2.0.0",
    "textupdate": "2.0.0",
    "textentry": "2.0.0",
    "spinner": "2.0.0",
    "led": "2.0.0",
    "action_button": "3.0.0",
    "combo": "2.0.0",
    "group": "3.0.0",
    "xyplot": "3.0.0",
}

#: Phoebus's predefined named colours (its ``color.def``): named, so a site's palette applies.
COLORS: Dict[str, Tuple[int, int, int]] = {
    "OK": (0, 255, 0),
    "MINOR": (255, 128, 0),
    "MAJOR": (255, 0, 0),
    "INVALID": (255, 0, 255),
    "Header_Background": (77, 77, 77),
    "Header_ForeGround": (255, 255, 255),
    "Background": (255, 255, 255),
    "Off": (60, 100, 60),
    "On": (0, 255, 0),
}
#: Phoebus's predefined named fonts (its ``font.def``): family, style, size.
FONTS: Dict[str, Tuple[str, str, int]] = {
    "Default Bold": ("Liberation Sans", "BOLD", 14),
    "Header 1": ("Liberation Sans", "BOLD", 22),
    "Comment": ("Liberation Sans", "ITALIC", 14),
    "Fine Print": ("Liberation Sans", "REGULAR", 12),
}
#: Log lines line up in a fixed-width font; Phoebus names none, so this one is given by its family
#: (shipped with Phoebus, like the Liberation Sans of the named ones).
MONOSPACE = ("Liberation Mono", "REGULAR", 12)


def color(which: Union[str, Tuple[int, int, int]]) -> ET.Element:
    """A ``<color>``: one of Phoebus's named :data:`COLORS` (a site's palette may redefine it), or
    plain red, green, blue."""
    red, green, blue = COLORS[which] if isinstance(which, str) else which
    element = ET.Element("color", red=str(red), green=str(green), blue=str(blue))
    if isinstance(which, str):
        element.attrib = {"name": which, **element.attrib}  # name first, as Phoebus writes it
    return element


def font(name: Optional[str]) -> ET.Element:
    """A ``<font>``: a named one from :data:`FONTS`, or (``None``) the :data:`MONOSPACE` one."""
    if name is None:
        family, style, size = MONOSPACE
        return ET.Element("font", family=family, style=style, size=f"{size:.1f}")
    family, style, size = FONTS[name]
    return ET.Element("font", name=name, family=family, style=style, size=f"{size:.1f}")


def _set(parent: ET.Element, tag: str, value: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if isinstance(value, ET.Element):
        element.append(value)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)
    return element


def _macros(parent: ET.Element, macros: Mapping[str, str]) -> None:
    if macros:
        element = ET.SubElement(parent, "macros")
        for name, value in macros.items():
            _set(element, name, value)


def write_pv(pv: str, value: object, description: str) -> ET.Element:
    action = ET.Element("action", type="write_pv")
    _set(action, "pv_name", pv)
    _set(action, "value", value)
    _set(action, "description", description)
    return action


def open_display(
    file: str, description: str, macros: Optional[Mapping[str, str]] = None, target: str = "replace"
) -> ET.Element:
    action = ET.Element("action", type="open_display")
    _set(action, "file", file)
    _macros(action, macros or {})
    _set(action, "target", target)
    _set(action, "description", description)
    return action


def severity_rule(pv: str, prop: str = "background_color") -> ET.Element:
    """A rule colouring ``prop`` by the PV's alarm severity, the text's own colour staying black.

    In a version 2 display ``pvSev0`` is ``PVUtil.getSeverity``: the severity's ordinal (0 NONE,
    1 MINOR, 2 MAJOR, 3 INVALID, 4 UNDEFINED); the legacy numbering (1 MAJOR, 2 MINOR) is
    ``pvLegacySev0``. Disconnected, the widget shows Phoebus's own disconnected border instead."""
    rule = ET.Element("rule", name="severity", prop_id=prop, out_exp="false")
    for expression, name in (
        ("pvSev0==0", "OK"),
        ("pvSev0==1", "MINOR"),
        ("pvSev0==2", "MAJOR"),
        ("pvSev0>=3", "INVALID"),
    ):
        exp = ET.SubElement(rule, "exp", bool_exp=expression)
        _set(exp, "value", color(name))
    ET.SubElement(rule, "pv", trig="true").text = pv
    return rule


class Display:
    """One ``.bob`` file being built: widgets are added to the display or to a group in it."""

    def __init__(self, name: str, width: int, macros: Optional[Mapping[str, str]] = None) -> None:
        self.root = ET.Element("display", version="2.0.0")
        _set(self.root, "name", name)
        _macros(self.root, macros or {})
        _set(self.root, "width", width)
        self._height = _set(self.root, "height", 0)
        self.bottom = 0

    def widget(
        self,
        kind: str,
        name: str,
        box: Sequence[int],
        parent: Optional[ET.Element] = None,
        actions: Sequence[ET.Element] = (),
        rules: Sequence[ET.Element] = (),
        **properties: object,
    ) -> ET.Element:
        """Add a widget at ``box`` = (x, y, width, height); ``properties`` in the order given. A font or
        colour property takes an Element from :func:`font` / :func:`color`."""
        element = ET.SubElement(self.root if parent is None else parent, "widget", type=kind, version=VERSIONS[kind])
        _set(element, "name", name)
        for tag, coordinate in zip(("x", "y", "width", "height"), box):
            _set(element, tag, coordinate)
        for tag, value in properties.items():
            if value is not None:
                _set(element, tag, value)
        if actions:
            holder = ET.SubElement(element, "actions")
            holder.extend(actions)
        if rules:
            holder = ET.SubElement(element, "rules")
            holder.extend(rules)
        if parent is None:
            self.bottom = max(self.bottom, box[1] + box[3])
        return element

    @staticmethod
    def resize(element: ET.Element, height: int) -> None:
        """Set the height of a widget added earlier (a group, once its rows are known)."""
        holder = element.find("height")
        assert holder is not None, "every widget has a height"
        holder.text = str(height)

    def write(self, path: Path) -> None:
        """Write the file, its height fitted to the widgets (Phoebus scrolls a taller display)."""
        self._height.text = str(self.bottom + 10)
        write_xml(self.root, path)


def write_xml(root: ET.Element, path: Path) -> None:
    """Indented, UTF-8, with the declaration Phoebus's own writers put first."""
    ET.indent(root, space="  ")
    path.write_bytes(
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode() + b"\n"
    )
