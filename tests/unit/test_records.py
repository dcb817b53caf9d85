"""Records from typed declarations: the kind and fields of each, names as macros, the refusals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from epics_bridge import PV, BasePVInterface
from epics_bridge.records import Record, database, parse_db, record_for, task_records
from epics_bridge.registry import Registry
from epics_bridge.status import TaskStatus
from epics_bridge.task import ConfigError


def task(name="pump", prefix="U:", pvs=None, **kwargs):
    return Registry.make(lambda t: None, name=name, prefix=prefix, pvs=pvs or {}, **kwargs)


@pytest.mark.parametrize(
    "pv, kind",
    [
        (PV("Press:RBV", float), "ai"),
        (PV("Press:SP", float), "ao"),
        (PV("Press", float, writable=True), "ao"),
        (PV("Count", int), "longin"),
        (PV("Count:SP", int), "longout"),
        (PV("Valve", bool), "bi"),
        (PV("Valve:SP", bool), "bo"),
        (PV("Mode", choices=["a"]), "mbbi"),
        (PV("Mode:SP", TaskStatus), "mbbo"),
        (PV("Name", str), "stringin"),
        (PV("Name:SP", str), "stringout"),
        (PV("Wave", float, length=4), "waveform"),
        (PV("Wave:SP", int, length=4), "waveform"),
        (PV("One", float, length=1), "ai"),
    ],
)
def test_the_record_kind_follows_type_and_direction(pv, kind):
    assert record_for(pv, pv.name, "x").kind == kind


def test_fields_carry_units_precision_limits_alarms_and_labels():
    fields = dict(
        record_for(
            PV("X:SP", float, units="mbar", precision=3, limits=(0, 1e-3), alarm=(None, 0.1, 0.5, None)), "X", "x"
        ).fields
    )
    assert fields == {
        "DESC": "x",
        "EGU": "mbar",
        "PREC": "3",
        "LOPR": "0.0",
        "HOPR": "0.001",
        "DRVL": "0.0",
        "DRVH": "0.001",
        "LOW": "0.1",
        "LSV": "MINOR",
        "HIGH": "0.5",
        "HSV": "MINOR",
    }
    assert dict(record_for(PV("N", int, limits=(0, 10), description="Counts"), "N", "n").fields) == {
        "DESC": "Counts",
        "LOPR": "0",
        "HOPR": "10",
    }
    assert dict(record_for(PV("B", bool), "B", "b").fields)["ONAM"] == "True"
    status = dict(record_for(PV("S", TaskStatus), "S", "s").fields)
    assert (status["ZRST"], status["FRST"]) == ("SUCCESS", "SKIPPED") and "DONE" not in status.values()
    wave = dict(record_for(PV("W", int, length=16, limits=(0, 5)), "W", "w").fields)
    assert (wave["FTVL"], wave["NELM"], "DRVH" in wave) == ("LONG", "16", False)


def test_names_become_prefix_macros_with_their_values_as_defaults():
    pump = task(pvs={"p": PV("Press", float), "t": PV("{sys}Temp", float), "u": "Untyped"}, prefixes={"sys": "S:"})
    assert {pv: r.name for pv, r in task_records(pump, macros=True).items()} == {
        "U:Press": "$(P=U:)Press",
        "S:Temp": "$(sys=S:)Temp",
    }
    assert [r.name for r in task_records(pump, macros=False).values()] == ["U:Press", "S:Temp"]


def test_a_literal_name_and_a_field_name_are_refused_naming_task_and_pv():
    @dataclass
    class Interface(BasePVInterface):
        fixed: PV = PV("OTHER:Temp", float)
        field: PV = PV("{main}Motor.VAL", float)

    pump = task(pvs=Interface)
    with pytest.raises(ConfigError) as caught:
        task_records(pump, macros=True)
    text = str(caught.value)
    assert "task 'pump': PV 'fixed' (OTHER:Temp): its template 'OTHER:Temp' uses no prefix key" in text
    assert "PV 'field' (U:Motor.VAL): not a record name" in text
    with pytest.raises(ConfigError, match="'field'"):
        task_records(pump, macros=False)  # the embedded IOC writes names resolved, but no field names


def test_a_pv_two_tasks_declare_alike_is_written_once_and_differently_is_refused():
    shared = {"temp": PV("{sys}Temp", float, units="K")}
    a = task("a", "A:", shared, prefixes={"sys": "S:"})
    b = task("b", "B:", shared, prefixes={"sys": "S:"})
    assert database([a, b]).count("record(") == 1
    c = task("c", "C:", {"temp": PV("{sys}Temp", int)}, prefixes={"sys": "S:"})
    with pytest.raises(ConfigError, match="task 'c': PV S:Temp is also declared by task 'a'"):
        database([a, c])


def test_no_typed_pv_gives_no_text_and_skipped_names_are_left_out():
    assert database([task(pvs={"a": "A"})]) == ""
    assert database([task(pvs={"a": PV("A", float)})], skip={"U:A"}) == ""


def test_parse_db_expands_macros_and_their_defaults_and_keeps_the_fields(tmp_path):
    db = tmp_path / "x.db"
    db.write_text(
        'record(ai, "$(P)A") { field(EGU, "$(U=mm)") field(DESC, "say \\"hi\\"") }\ngrecord(bo,"${P}B")\n'
        'record(waveform, "$(Q=D:)C") {\n    field(FTVL, "DOUBLE")  # trailing\n}\n'
        'record(ai, "$(R)E")\n  # record(ai, "X")\nrecord(ai, "$(P)A") { field(PREC, "2") }\n'
    )
    found = parse_db(db, {"P": "M:"})
    assert set(found) == {"M:A", "M:B", "D:C", "$(R)E"}
    assert found["M:A"] == Record("ai", "M:A", (("EGU", "mm"), ("DESC", 'say \\"hi\\"'), ("PREC", "2")))
    assert found["D:C"].field("FTVL") == "DOUBLE" and found["M:B"].kind == "bo"


def test_generated_text_parses_back_to_the_same_records(tmp_path):
    pump = task(pvs={"p": PV("Press:RBV", float, units="mbar", alarm=(None, None, 1, 2)), "v": PV("V:SP", bool)})
    (tmp_path / "gen.db").write_text(database([pump], macros=False))
    assert parse_db(tmp_path / "gen.db", {}) == {r.name: r for r in task_records(pump, macros=False).values()}


def test_a_field_of_a_record_a_database_defines_needs_no_record():
    pump = task(pvs={"speed": PV("{main}Motor.VELO", float), "position": PV("{main}Motor.RBV", float)})
    assert task_records(pump, macros=False, skip={"U:Motor"}) == {}
    with pytest.raises(ConfigError, match="PV 'speed' \\(U:Motor.VELO\\): not a record name"):
        task_records(pump, macros=False)
