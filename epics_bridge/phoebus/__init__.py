"""The operator's side of the tasks, generated from the task files the service runs: Phoebus screens
(``epics-bridge display``) and a Phoebus alarm server configuration (``epics-bridge alarms``), so
neither can drift from the code. Both load the files as the launcher does and need no IOC."""
