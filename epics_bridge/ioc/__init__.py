"""The soft IOC (EPICS base + QSRV from pip) used by the tests, --ioc and the benchmark."""
