"""``epics-bridge alarms PATH... -o FILE.xml [--config NAME] [--display-dir REL]``: a Phoebus alarm
server configuration for the tasks, importable with the alarm server's ``-import``.

The tree is config -> a component per task file -> a component per task -> two PVs:
``{prefix}HeartbeatAge`` (MAJOR once the IOC has seen no heartbeat for its HIHI seconds: the daemon
is dead or hung; latching, so a daemon that died and came back is still noticed) and
``{prefix}TaskStatus`` (MINOR or MAJOR while the last cycle failed; not latching, the next good
cycle clears it), then every typed PV declared with ``alarm`` levels (MINOR or MAJOR while its value is
outside them; not latching). The elements and their order are those of Phoebus's own XmlModelWriter, so an
``-export`` of the imported tree reads the same. PV names are bare: a name with ``pva://`` would
hold a ``/``, which the alarm tree's paths forbid; the alarm server reaches them with its default
protocol (Channel Access unless ``org.phoebus.pv/default=pva``), which ``--ioc`` serves too.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NoReturn, Sequence, Tuple
from xml.etree import ElementTree as ET

from ..cli.common import fail
from ..pv import PV
from ..task import Task
from .bob import write_xml
from .source import HEARTBEAT_AGE, by_file, load_or_fail, shown_path

__all__ = ["Alarm", "alarm_tree", "main"]

DEFAULT_CONFIG = "epics-bridge"
#: The configuration's name is the alarm server's Kafka topic (and, with a suffix, its State, Command
#: and Talk topics): Kafka's characters, with room for the suffix.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class Alarm:
    """One ``<pv>`` of the tree, with what an operator is told about it."""

    pv: str
    description: str
    latching: bool
    guidance: str
    enabled: bool = True
    annunciating: bool = False


def _text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _title_details(parent: ET.Element, tag: str, title: str, details: str) -> None:
    element = ET.SubElement(parent, tag)
    _text(element, "title", title)
    _text(element, "details", details)


def _where_to_look(task: Task, folder: str) -> str:
    return (
        f"Journal: journalctl -u epics-bridge@{folder} (the unit of the task folder {folder}/). "
        f"Log file: {task.name}.log in the service's --log-dir (/var/log/epics-bridge/{folder}/ under "
        f"that unit, ./logs/ by default). Code: {shown_path(task.source.path)}."
    )


def _levels(pv: PV) -> str:
    """'MINOR above 60 C, MAJOR above 80 C' for alarm=(None, None, 60, 80), units='C'."""
    units = f" {pv.units}" if pv.units else ""
    lolo, low, high, hihi = pv.alarm or (None, None, None, None)
    levels = [
        (severity, f"{side} {level:g}{units}")
        for severity, side, level in (
            ("MINOR", "below", low),
            ("MINOR", "above", high),
            ("MAJOR", "below", lolo),
            ("MAJOR", "above", hihi),
        )
        if level is not None
    ]
    return ", ".join(f"{severity} {where}" for severity, where in levels)


def _level_alarm(task: Task, logical: str, pv: PV, where: str) -> Alarm:
    what = pv.description or logical
    return Alarm(
        pv.name,
        f"{task.name}: {what} outside its alarm levels",
        latching=False,
        guidance=f"{pv.name} ({logical} of task {task.name}) is {_levels(pv)}, as the task declares it "
        f"(PV(..., alarm=...)); the alarm clears when the value is back inside. {where}",
    )


def alarms_of(task: Task, folder: str) -> List[Alarm]:
    """The task's heartbeat and status alarms, then one per typed PV with alarm levels."""
    where = _where_to_look(task, folder)
    levels = [_level_alarm(task, n, pv, where) for n, pv in task.pvs.declarations.items() if pv.alarm is not None]
    return [
        Alarm(
            task.prefix + HEARTBEAT_AGE,
            f"{task.name}: no heartbeat - the epics-bridge daemon is dead or hung",
            latching=True,
            guidance=f"{task.name} has stopped toggling {task.pvs.heartbeat}. Is the service running "
            f"(systemctl status epics-bridge@{folder})? A task that stays stuck ends its process, "
            f"which is started again: the log says which task and why. {where}",
        ),
        Alarm(
            task.pvs.task_status,
            f"{task.name}: last cycle failed",
            latching=False,
            guidance=f"{task.pvs.task_status} says how: Task Fail (the task reported a failure), IO Failure "
            f"(a PV it needs did not answer), Code Crash (an exception; its traceback is in the log). "
            f"The next successful cycle clears it. {where}",
        ),
        *levels,
    ]


def _pv(parent: ET.Element, alarm: Alarm, display: Tuple[str, str]) -> None:
    """As XmlModelWriter writes a leaf: its settings, then guidance, display, command, actions."""
    element = ET.SubElement(parent, "pv", name=alarm.pv)
    _text(element, "description", alarm.description)
    for tag, flag in (("enabled", alarm.enabled), ("latching", alarm.latching), ("annunciating", alarm.annunciating)):
        _text(element, tag, "true" if flag else "false")
    _title_details(element, "guidance", "What to check", alarm.guidance)
    _title_details(element, "display", *display)


def _unique(names: Iterable[str]) -> List[str]:
    """Names unique under one parent (the alarm server refuses twins): later twins get ' (2)', ' (3)'."""
    seen: Dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _component_name(text: str) -> str:
    """An alarm tree name: '/' separates a path's parts, so it cannot be inside one."""
    return text.replace("/", "_")


def alarm_tree(tasks: Sequence[Task], config: str = DEFAULT_CONFIG, display_dir: str = "") -> ET.Element:
    """The ``<config>`` for ``tasks``: task files in path order, tasks in the order each file declares them."""
    root = ET.Element("config", name=config)
    files = by_file(tasks)
    seen = set()  # the alarm server keeps a PV only at its first place (class-API tasks may share one)
    for (path, file_tasks), name in zip(files.items(), _unique(_component_name(p.name) for p in files)):
        component = ET.SubElement(root, "component", name=name)
        for task in file_tasks:  # task names are unique (the registry refuses twins) and hold no '/'
            leaf = ET.SubElement(component, "component", name=task.name)
            screen = f"{display_dir.rstrip('/')}/{task.name}.bob" if display_dir else f"{task.name}.bob"
            for alarm in alarms_of(task, path.parent.name):
                if alarm.pv not in seen:
                    seen.add(alarm.pv)
                    _pv(leaf, alarm, (f"{task.name} screen", screen))
    return root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epics-bridge alarms", description="Write a Phoebus alarm server configuration for the tasks in PATH."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.xml", help="the configuration to write")
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="NAME",
        help=f"name of the alarm configuration (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--display-dir",
        default="",
        metavar="REL",
        help="where the alarm server's clients find the task screens (epics-bridge display -o), "
        "prefixed to <task>.bob in each alarm's display link",
    )
    return parser


def _option_problems(args: argparse.Namespace) -> List[str]:
    problems = []
    output = Path(args.output)
    if output.is_dir():
        problems.append(f"-o {output}: is a folder; give the file to write, e.g. {output / 'alarms.xml'}")
    elif not output.parent.is_dir():
        problems.append(f"-o {output}: folder {output.parent} does not exist")
    if not _TOPIC.fullmatch(args.config):
        problems.append(
            f"--config {args.config!r}: it names the alarm server's Kafka topics, so letters, digits, "
            "'.', '_' and '-' only (at most 200)"
        )
    return problems


def main(argv: Sequence[str]) -> NoReturn:
    args = _parser().parse_args(argv)
    problems = _option_problems(args)
    if problems:
        fail("\n".join(problems))
    tasks = load_or_fail(args.paths)
    tree = alarm_tree(tasks, args.config, args.display_dir)
    try:
        write_xml(tree, Path(args.output))
    except OSError as exc:
        fail(f"-o {args.output}: cannot write it: {exc.strerror or exc}")
    print(f"{args.output}: {len(tasks)} task(s), {len(list(tree.iter('pv')))} alarm PVs")
    raise SystemExit(0)
