"""P4P -> Python conversion on values real servers send: the soft IOC (QSRV) and a p4p SharedPV server."""

from __future__ import annotations

import socket
from typing import Dict, Iterator

import numpy as np
import pytest
from conftest import VALUES
from p4p import Type, Value
from p4p.client.thread import Context
from p4p.nt import NTNDArray, NTScalar, NTTable
from p4p.server import Server
from p4p.server.thread import SharedPV

from epics_bridge.ioc.softioc import free_port
from epics_bridge.values import EnumValue, to_python, unwrap_p4p_structure

IMAGE = np.arange(6, dtype=np.uint16).reshape(2, 3) * 1000
TABLE = NTTable(columns=[("name", "s"), ("position", "d"), ("count", "i")])
ROWS = [{"name": "a", "position": 1.5, "count": 1}, {"name": "b", "position": -2.0, "count": 7}]
CUSTOM = Type([("gain", "d"), ("label", "s"), ("inner", ("S", None, [("n", "i")]))], id="site:custom:1.0")
# Claims to be an NTScalar but has no 'value' field: a broken server must not break the reader.
IMPOSTOR = Type([("other", "i")], id="epics:nt/NTScalar:1.0")


@pytest.fixture(scope="module")
def pva_server() -> Iterator[Dict[str, str]]:
    """A p4p PVA server on loopback with its own ports; yields the matching client configuration."""
    pvs = {
        "SRV:Image": SharedPV(nt=NTNDArray(), initial=IMAGE),
        "SRV:Table": SharedPV(nt=TABLE, initial=TABLE.wrap(ROWS)),
        "SRV:Custom": SharedPV(initial=Value(CUSTOM, {"gain": 2.5, "label": "x", "inner": {"n": 3}})),
        "SRV:Impostor": SharedPV(initial=Value(IMPOSTOR, {"other": 9})),
        "SRV:Flag": SharedPV(nt=NTScalar("?"), initial=True),
    }
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    conf = {
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_SERVER_PORT": str(tcp),
        "EPICS_PVAS_BROADCAST_PORT": str(udp),
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
    }
    with Server(providers=[pvs], conf=conf, useenv=False):
        yield {
            "EPICS_PVA_ADDR_LIST": "127.0.0.1",
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_SERVER_PORT": str(tcp),
            "EPICS_PVA_BROADCAST_PORT": str(udp),
        }


@pytest.fixture
def server_client(pva_server: Dict[str, str]) -> Iterator[Context]:
    ctx = Context("pva", nt=False, conf=pva_server, useenv=False)
    yield ctx
    ctx.close()


@pytest.fixture
def nt_client(ioc) -> Iterator[Context]:
    """p4p's default client, which hands out its own wrapped types (ntfloat, ntenum, ...)."""
    ctx = Context("pva")
    yield ctx
    ctx.close()


# -- NTScalar ----------------------------------------------------------------------------------
def test_double_is_float(client):
    value = to_python(client.get(VALUES + "Double"))
    assert type(value) is float and value == 1.5


@pytest.mark.parametrize("record, expected", [("Long", 42), ("Int64", 1234567890123)])
def test_integer_records_are_plain_int(client, record, expected):
    value = to_python(client.get(VALUES + record))
    assert type(value) is int and value == expected


def test_string_is_str(client):
    value = to_python(client.get(VALUES + "Text"))
    assert type(value) is str and value == "hello"


def test_bool_scalar_is_bool(server_client):
    value = to_python(server_client.get("SRV:Flag"))
    assert type(value) is bool and value is True


# -- NTEnum ------------------------------------------------------------------------------------
def test_bi_is_enum_value(client):
    value = to_python(client.get(VALUES + "Bool"))
    assert isinstance(value, EnumValue) and isinstance(value, int)
    assert value == 1 and value.choices == ["Off", "On"] and value.label == "On"


@pytest.mark.parametrize("index, label", [(0, "Off"), (1, "On")])
def test_bo_is_enum_value(client, index, label):
    client.put(VALUES + "BoolOut", index)
    value = to_python(client.get(VALUES + "BoolOut"))
    assert isinstance(value, EnumValue)
    assert value == index and value.label == label and value.choices == ["Off", "On"]


def test_mbbo_is_its_index_with_choices(client):
    client.put(VALUES + "Mode", 2)
    value = to_python(client.get(VALUES + "Mode"))
    assert isinstance(value, EnumValue)
    assert value == 2 and int(value) == 2
    assert value.label == "Hold" and value.choices[:3] == ["Idle", "Ramp", "Hold"]


def test_enum_label_outside_choices_is_empty():
    assert EnumValue(5, ["a", "b"]).label == ""
    assert EnumValue(-1, ["a"]).label == ""


# -- NTScalarArray -----------------------------------------------------------------------------
def test_double_waveform_is_float64_array(client):
    wave = np.linspace(0.0, 1.0, 11)
    client.put(VALUES + "Wave", wave)
    value = to_python(client.get(VALUES + "Wave"))
    assert isinstance(value, np.ndarray) and value.dtype == np.float64
    np.testing.assert_array_equal(value, wave)


def test_long_waveform_is_integer_array(client):
    client.put(VALUES + "LongWave", np.array([3, -1, 2_000_000_000]))
    value = to_python(client.get(VALUES + "LongWave"))
    assert isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer)
    assert value.tolist() == [3, -1, 2_000_000_000]


def test_string_waveform_is_list_of_str(client):
    client.put(VALUES + "StringWave", ["alpha", "beta", ""])
    value = to_python(client.get(VALUES + "StringWave"))
    assert type(value) is list and all(type(s) is str for s in value)
    assert value == ["alpha", "beta", ""]


# -- NTNDArray, NTTable and structures from a p4p server ---------------------------------------
def test_a_string_array_not_all_utf8_keeps_every_element_with_replacement():
    elements = [b"ok", b"\xffbad", b'q"uo\\te', b"tab\tnew\nline", b"caf\xc3\xa9", b"[a, b]", b"", b"\x01\x7f"]
    value = Value(Type([("value", "as")], id="epics:nt/NTScalarArray:1.0"), {"value": elements})
    assert to_python(value) == [e.decode("utf-8", errors="replace") for e in elements]


def test_ndarray_is_shaped_by_its_dimensions(server_client):
    value = to_python(server_client.get("SRV:Image"))
    assert type(value) is np.ndarray
    assert value.shape == (2, 3) and value.dtype == np.uint16
    np.testing.assert_array_equal(value, IMAGE)


def test_table_is_dict_of_columns(server_client):
    value = to_python(server_client.get("SRV:Table"))
    assert type(value) is dict and list(value) == ["name", "position", "count"]
    assert value["name"] == ["a", "b"]
    np.testing.assert_array_equal(value["position"], [1.5, -2.0])
    assert isinstance(value["count"], np.ndarray) and value["count"].tolist() == [1, 7]


def test_unknown_structure_is_plain_dict(server_client):
    value = to_python(server_client.get("SRV:Custom"))
    assert value == {"gain": 2.5, "label": "x", "inner": {"n": 3}}
    assert type(value) is dict and type(value["inner"]) is dict


def test_structure_with_a_misleading_id_is_plain_dict(server_client):
    assert to_python(server_client.get("SRV:Impostor")) == {"other": 9}


def test_group_pv_is_plain_dict(client, prefix):
    value = to_python(client.get(prefix + "CycleEnd"))
    assert type(value) is dict
    assert {"status", "duration", "busy", "trigger"} <= set(value)


# -- other inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given, expected, kind",
    [(np.float64(2.5), 2.5, float), (np.int32(7), 7, int), (np.bool_(True), True, bool), ("s", "s", str)],
)
def test_numpy_scalars_and_python_values(given, expected, kind):
    value = to_python(given)
    assert type(value) is kind and value == expected


def test_the_1_0_1_alias_converts_the_same(client):
    value = unwrap_p4p_structure(client.get(VALUES + "Long"))
    assert type(value) is int and value == 42


# -- p4p's own wrapped types (Context with its default nt) -----------------------------------------
@pytest.mark.parametrize(
    "record, kind, expected",
    [("Double", float, 1.5), ("Long", int, 42), ("Int64", int, 1234567890123), ("Text", str, "hello")],
)
def test_nt_wrapped_scalars(nt_client, record, kind, expected):
    value = to_python(nt_client.get(VALUES + record))
    assert type(value) is kind and value == expected


def test_nt_wrapped_enum(nt_client):
    value = to_python(nt_client.get(VALUES + "Bool"))
    assert isinstance(value, EnumValue) and value == 1 and value.label == "On"


def test_nt_wrapped_arrays(nt_client, client):
    client.put(VALUES + "LongWave", np.array([5, 6]))
    ints = to_python(nt_client.get(VALUES + "LongWave"))
    assert type(ints) is np.ndarray and ints.tolist() == [5, 6]
    client.put(VALUES + "StringWave", ["p", "q"])
    strings = to_python(nt_client.get(VALUES + "StringWave"))
    assert type(strings) is list and strings == ["p", "q"]


# p4p's own NT client (nt=True, not what the bridge uses) reshapes by assigning to ``shape``, which
# NumPy 2.5 deprecates: that warning is p4p's, in p4p's code, and this test is about our conversion.
@pytest.mark.filterwarnings("ignore:Setting the shape on a NumPy array:DeprecationWarning")
def test_nt_wrapped_ndarray(pva_server):
    ctx = Context("pva", conf=pva_server, useenv=False)
    try:
        value = to_python(ctx.get("SRV:Image"))
    finally:
        ctx.close()
    assert type(value) is np.ndarray and value.shape == (2, 3)
    np.testing.assert_array_equal(value, IMAGE)
