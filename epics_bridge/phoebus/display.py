"""``epics-bridge display PATH... -o DIR [--only NAME...]``: Phoebus screens for the tasks.

``DIR/overview.bob`` has one row per task (alive, busy, last result, duration, newest log line, a
Run button, a link to the task's screen); ``DIR/<task>.bob`` shows one task: its handshake and
heartbeat, every PV of its ``pvs`` under its logical name, its log PVs and LogLevel.

PV names are written ``pva://...``: the daemon itself reaches every one of these PVs over PV Access,
so that protocol is served wherever the task works, while Channel Access (Phoebus's default for a
bare name) may not be (a QSRV-only IOC, a PVA gateway); the log PVs are also long strings, which
only PV Access carries as text. A task screen names its own PVs through the macro ``$(P)`` (the
task's prefix, set in the file and passed by the overview), so it can be copied for a twin device.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, NoReturn, Optional, Sequence, Tuple
from xml.etree import ElementTree as ET

from ..cli.common import fail
from ..task import Task
from .bob import Display, color, font, open_display, severity_rule, write_pv
from .records import Record, records_of
from .source import HEARTBEAT_AGE, INFO_LOG, LOG_LEVEL, LOG_PVS, load_or_fail, shown_path

__all__ = ["OVERVIEW", "main", "write_screens"]

OVERVIEW = "overview.bob"
PROTOCOL = "pva://"
WIDTH = 1280
ROW = 30  # pixels per row of widgets
HEIGHT = 24  # a widget's height inside its row
TITLE_HEIGHT = 50
#: Overview columns: (heading, x, width).
COLUMNS = (
    ("Task", 10, 170),
    ("Alive", 185, 45),
    ("Age", 235, 60),
    ("Busy", 300, 45),
    ("Last cycle", 350, 110),
    ("Duration", 465, 95),
    ("Run", 565, 110),
    ("Screen", 680, 90),
    ("Newest log line", 775, 495),
)
VALUE_WIDTH = 220  # a value's widget on a task screen
LOG_HEIGHT = 310  # 20 lines (LogLines' default) of 12 px monospace


def pv_name(pv: str, prefix: Optional[str] = None) -> str:
    """``pva://NAME``; under ``prefix`` (the screen's ``$(P)``), written with the macro."""
    if prefix and pv.startswith(prefix):
        pv = "$(P)" + pv[len(prefix) :]
    return PROTOCOL + pv


def _title(screen: Display, text: str, subtitle: str) -> None:
    screen.widget(
        "label",
        "title",
        (0, 0, WIDTH, TITLE_HEIGHT),
        text=text,
        font=font("Header 1"),
        foreground_color=color("Header_ForeGround"),
        background_color=color("Header_Background"),
        transparent=False,
        vertical_alignment=1,
    )
    screen.widget("label", "subtitle", (10, TITLE_HEIGHT + 5, WIDTH - 170, HEIGHT), text=subtitle, font=font("Comment"))


#: Lamp colours when on: Heartbeat flashes green while it toggles, Busy lights yellow.
GREEN, YELLOW = color("On"), color((255, 200, 0))


def _led(
    screen: Display, name: str, pv: str, box: Sequence[int], parent: Optional[ET.Element] = None, on: ET.Element = GREEN
) -> None:
    """A bi record as a lamp, centred in ``box``."""
    x, y, width, _ = box
    size = HEIGHT - 4
    screen.widget(
        "led",
        name,
        (x + (width - size) // 2, y + 2, size, size),
        parent,
        pv_name=pv,
        off_color=color("Off"),
        on_color=on,
    )


def _status(screen: Display, name: str, pv: str, box: Sequence[int], parent: Optional[ET.Element] = None) -> None:
    """TaskStatus as its state string on the colour of its severity."""
    screen.widget(
        "textupdate",
        name,
        box,
        parent,
        rules=[severity_rule(pv)],
        pv_name=pv,
        transparent=False,
        horizontal_alignment=1,
        border_alarm_sensitive=True,
    )


def _value(
    screen: Display,
    name: str,
    pv: str,
    box: Sequence[int],
    parent: Optional[ET.Element] = None,
    precision: Optional[int] = None,
) -> None:
    """A number with its unit, right-aligned, its border showing the alarm; ``precision`` digits in
    decimal format (the record's PREC otherwise)."""
    screen.widget(
        "textupdate",
        name,
        box,
        parent,
        pv_name=pv,
        show_units=True,
        horizontal_alignment=2,
        border_alarm_sensitive=True,
        format=None if precision is None else 1,
        precision=precision,
    )


def _run_button(
    screen: Display, task: Task, box: Sequence[int], prefix: Optional[str] = None, parent: Optional[ET.Element] = None
) -> None:
    """Trigger tasks: a button writing Trigger=1 (the daemon answers Trigger=0); others say when they run."""
    if task.mode == "trigger":
        screen.widget(
            "action_button",
            f"{task.name} run",
            box,
            parent,
            actions=[write_pv(pv_name(task.pvs.trigger, prefix), 1, f"Run {task.name}")],
            pv_name=pv_name(task.pvs.trigger, prefix),
            text="Run",
            tooltip=f"Write 1 to {task.pvs.trigger}: run one cycle",
        )
    else:
        screen.widget(
            "label",
            f"{task.name} mode",
            box,
            parent,
            text=task.mode,
            horizontal_alignment=1,
            font=font("Comment"),
            tooltip=f"{task.name} runs on its own: no Trigger",
        )


def _overview_row(screen: Display, task: Task, y: int) -> None:
    prefix, pvs = task.prefix, task.pvs
    x = {heading: (left, width) for heading, left, width in COLUMNS}

    def box(column: str) -> Tuple[int, int, int, int]:
        return (x[column][0], y, x[column][1], HEIGHT)

    screen.widget(
        "label",
        f"{task.name} name",
        box("Task"),
        text=task.name,
        font=font("Default Bold"),
        tooltip=f"{prefix} ({task.mode})",
    )
    _led(screen, f"{task.name} heartbeat", pv_name(pvs.heartbeat), box("Alive"))
    _value(screen, f"{task.name} heartbeat age", pv_name(prefix + HEARTBEAT_AGE), box("Age"))
    _led(screen, f"{task.name} busy", pv_name(pvs.busy), box("Busy"), on=YELLOW)
    _status(screen, f"{task.name} status", pv_name(pvs.task_status), box("Last cycle"))
    _value(screen, f"{task.name} duration", pv_name(pvs.task_duration), box("Duration"), precision=3)
    _run_button(screen, task, box("Run"))
    screen.widget(
        "action_button",
        f"{task.name} open",
        box("Screen"),
        actions=[open_display(f"{task.name}.bob", f"Open {task.name}", {"P": prefix})],
        text="Details",
    )
    # newest last: aligned to the bottom, a one-line cell shows the newest line; hover for all of them
    screen.widget(
        "textupdate",
        f"{task.name} log",
        box("Newest log line"),
        pv_name=pv_name(prefix + INFO_LOG),
        format=6,
        vertical_alignment=2,
        font=font("Fine Print"),
        tooltip="$(pv_value)",
    )


def overview(tasks: Sequence[Task]) -> Display:
    screen = Display("epics-bridge tasks", WIDTH)
    files = sorted({shown_path(task.source.path) for task in tasks})
    if len(files) > 3:  # a facility's hundreds would not fit: name the folders instead
        folders = sorted({str(Path(file).parent) for file in files})
        files = [f"{len(files)} files in {', '.join(folders)}"]
    _title(screen, "  epics-bridge tasks", f"{len(tasks)} task(s) from {', '.join(files)}")
    top = TITLE_HEIGHT + 10 + ROW
    for heading, x, width in COLUMNS:
        screen.widget(
            "label",
            f"heading {heading}",
            (x, top, width, HEIGHT),
            text=heading,
            font=font("Default Bold"),
            horizontal_alignment=0 if x < 100 or width > 400 else 1,
        )
    for row, task in enumerate(tasks, start=1):
        _overview_row(screen, task, top + row * ROW)
    return screen


class _Column:
    """A titled group of label + widget rows, stacked downwards."""

    def __init__(self, screen: Display, title: str, x: int, y: int, width: int) -> None:
        self.screen, self.y, self.width, self.next = screen, y, width, 5
        self.group = screen.widget("group", title, (x, y, width, 0))

    def row(
        self, label: str, pv: Optional[str], height: int = HEIGHT, width: int = VALUE_WIDTH
    ) -> Tuple[int, int, int, int]:
        """Add the label, and the PV's name in small print at the right; return the box for the widget."""
        self.screen.widget("label", f"{label} label", (5, self.next, 170, HEIGHT), self.group, text=label, tooltip=pv)
        if pv is not None:
            self.screen.widget(
                "label",
                f"{label} PV",
                (190 + VALUE_WIDTH, self.next, self.width - VALUE_WIDTH - 215, HEIGHT),
                self.group,
                text=pv,
                font=font("Fine Print"),
            )
        box = (180, self.next, width, height)
        self.next += height + ROW - HEIGHT
        self.fit(self.next + 30)
        return box

    def fit(self, height: int) -> None:
        self.screen.resize(self.group, height)
        self.screen.bottom = max(self.screen.bottom, self.y + height)


def _standard_column(screen: Display, task: Task, y: int) -> None:
    prefix, pvs = task.prefix, task.pvs
    column = _Column(screen, "Handshake and heartbeat", 10, y, 620)
    group = column.group
    triggered = task.mode == "trigger"
    run_row = column.row("Trigger", pvs.trigger) if triggered else column.row("Runs", None)
    _run_button(screen, task, run_row[:2] + (110 if triggered else 200, HEIGHT), prefix, group)
    _led(
        screen, "busy", pv_name(pvs.busy, prefix), column.row("Busy", pvs.busy)[:2] + (HEIGHT, HEIGHT), group, on=YELLOW
    )
    _led(
        screen,
        "heartbeat",
        pv_name(pvs.heartbeat, prefix),
        column.row("Heartbeat", pvs.heartbeat)[:2] + (HEIGHT, HEIGHT),
        group,
    )
    _value(
        screen,
        "heartbeat age",
        pv_name(prefix + HEARTBEAT_AGE, prefix),
        column.row("Heartbeat age", prefix + HEARTBEAT_AGE),
        group,
    )
    _status(screen, "status", pv_name(pvs.task_status, prefix), column.row("Last cycle", pvs.task_status), group)
    _value(
        screen,
        "duration",
        pv_name(pvs.task_duration, prefix),
        column.row("Duration", pvs.task_duration),
        group,
        precision=4,
    )


def _task_pv(screen: Display, column: _Column, logical: str, pv: str, record: Optional[Record], prefix: str) -> None:
    name = pv_name(pv, prefix)
    if record is not None and record.numeric_array:
        plot = screen.widget(
            "xyplot", logical, column.row(logical, pv, height=160), column.group, show_legend=False, show_toolbar=False
        )
        trace = ET.SubElement(ET.SubElement(plot, "traces"), "trace")
        for tag, value in (
            ("name", logical),
            ("x_pv", ""),
            ("y_pv", name),
            ("err_pv", ""),
            ("axis", 0),
            ("trace_type", 1),
        ):
            ET.SubElement(trace, tag).text = str(value)
    elif record is not None and record.choice:
        screen.widget(
            "combo",
            logical,
            column.row(logical, pv),
            column.group,
            pv_name=name,
            items_from_pv=True,
            border_alarm_sensitive=True,
        )
    elif record is not None and record.writable and record.drive is not None:
        low, high = record.drive
        screen.widget(
            "spinner",
            logical,
            column.row(logical, pv),
            column.group,
            pv_name=name,
            show_units=True,
            minimum=f"{low:g}",
            maximum=f"{high:g}",
            limits_from_pv=False,
            increment=f"{(high - low) / 100:g}",
            horizontal_alignment=2,
            border_alarm_sensitive=True,
            tooltip=f"{pv}: {low:g} .. {high:g}",
        )
    elif record is not None and record.writable:
        screen.widget(
            "textentry",
            logical,
            column.row(logical, pv),
            column.group,
            pv_name=name,
            show_units=True,
            horizontal_alignment=2,
            border_alarm_sensitive=True,
        )
    else:
        _value(screen, logical, name, column.row(logical, pv), column.group)


def _own_column(screen: Display, task: Task, y: int) -> None:
    standard = {task.pvs.trigger, task.pvs.busy, task.pvs.heartbeat, task.pvs.task_status, task.pvs.task_duration}
    own = {logical: pv for logical, pv in task.pvs.as_dict.items() if pv not in standard}
    column = _Column(screen, "Task PVs", 650, y, 620)
    records = records_of(task)
    for logical, pv in own.items():
        _task_pv(screen, column, logical, pv, records.get(pv), task.prefix)
    if not own:
        screen.widget(
            "label", "none", (5, 5, 400, HEIGHT), column.group, text="(this task declares no PVs)", font=font("Comment")
        )
        column.fit(HEIGHT + 40)


def _log_group(screen: Display, task: Task, y: int) -> None:
    prefix = task.prefix
    group = screen.widget("group", "Log", (10, y, WIDTH - 20, 0))
    screen.widget("label", "log level label", (5, 5, 200, HEIGHT), group, text="Published level (LogLevel)")
    screen.widget(
        "combo",
        "log level",
        (210, 5, 150, HEIGHT),
        group,
        pv_name=pv_name(prefix + LOG_LEVEL, prefix),
        items_from_pv=True,
        tooltip="Lowest level shown below; the log files keep theirs",
    )
    top = 5 + ROW
    for kind in LOG_PVS:
        screen.widget("label", f"{kind} label", (5, top, 300, HEIGHT), group, text=kind, font=font("Default Bold"))
        screen.widget(
            "textupdate",
            kind,
            (5, top + HEIGHT, WIDTH - 40, LOG_HEIGHT),
            group,
            pv_name=pv_name(prefix + kind, prefix),
            format=6,
            font=font(None),
            vertical_alignment=2,
            wrap_words=True,
            background_color=color("Background"),
        )
        top += HEIGHT + LOG_HEIGHT + 6
    screen.resize(group, top + 30)
    screen.bottom = max(screen.bottom, y + top + 30)


def task_screen(task: Task) -> Display:
    screen = Display(task.name, WIDTH, macros={"P": task.prefix})
    _title(screen, f"  {task.name}", f"$(P) = {task.prefix}   ·   {task.mode}   ·   {shown_path(task.source.path)}")
    screen.widget(
        "action_button",
        "back to overview",
        (WIDTH - 150, TITLE_HEIGHT + 5, 140, HEIGHT),
        actions=[open_display(OVERVIEW, "All tasks")],
        text="All tasks",
    )
    top = TITLE_HEIGHT + 40
    _standard_column(screen, task, top)
    _own_column(screen, task, top)
    _log_group(screen, task, screen.bottom + 10)
    return screen


def write_screens(tasks: Sequence[Task], folder: Path) -> List[Path]:
    """Write the overview and one screen per task into ``folder``; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / OVERVIEW]
    overview(tasks).write(written[0])
    for task in tasks:
        written.append(folder / f"{task.name}.bob")
        task_screen(task).write(written[-1])
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epics-bridge display", description="Write Phoebus screens (.bob) for the tasks in PATH."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="task file, or folder of task files")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for overview.bob and <task>.bob")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME", help="only these tasks")
    return parser


def main(argv: Sequence[str]) -> NoReturn:
    args = _parser().parse_args(argv)
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        fail(f"-o {folder}: exists and is not a folder")
    tasks = load_or_fail(args.paths, only=args.only)
    if any(f"{task.name}.bob" == OVERVIEW for task in tasks):
        fail(f"task 'overview': its screen would replace {OVERVIEW}; give the task another name (name=...)")
    try:
        written = write_screens(tasks, folder)
    except OSError as exc:
        fail(f"-o {folder}: cannot write the screens there: {exc.strerror or exc}")
    for path in written:
        print(path)
    raise SystemExit(0)
