"""Task files named like standard modules never shadow them, whatever the working directory: the
shipped unit runs with the task folder as its working directory, so this runs the service from
inside the folder and triggers every task on a real IOC."""

from __future__ import annotations

from helpers import client_for, daemon, ready_trigger, write_tasks

from epics_bridge import TaskStatus

#: Standard modules that the service itself imports while it starts and serves, each with a name of theirs.
SHADOWING = {"json": "dumps", "select": "select", "logging": "getLogger", "signal": "SIGTERM"}


def test_task_files_named_like_standard_modules_run_from_their_own_folder(make_ioc, tmp_path):
    prefixes = {name: f"SB:{name.upper()}:" for name in SHADOWING}
    ioc = make_ioc(*prefixes.values())
    folder = tmp_path / "tasks"
    for name, prefix in prefixes.items():
        write_tasks(
            folder,
            f"""
            import {name} as imported
            from epics_bridge import bridge

            @bridge.task(prefix="{prefix}")
            def {name}_task(t):
                # the standard module, not this file
                assert hasattr(imported, "{SHADOWING[name]}")
            """,
            f"{name}.py",
        )
    with daemon([".", "--isolation", "file"], ioc.client_env, folder) as d:  # the unit's working directory
        ctx = client_for(ioc.client_env)
        for prefix in prefixes.values():
            trigger = ready_trigger(ctx, prefix, timeout=60)
            assert trigger.cycle() == TaskStatus.SUCCESS, prefix
            trigger.close()
        ctx.close()
        assert d.proc.poll() is None
    assert "Traceback" not in d.stderr
