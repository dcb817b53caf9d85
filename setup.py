"""The one compiled part: ``epics_bridge.kept._pvxs`` (epics_bridge/kept/_pvxs.cpp), built against the
headers of the pvxs that p4p loads. It is optional: where it cannot be built (no C++ compiler), or
where the pvxs at run time is not the one it was built for, epics_bridge writes through p4p alone.
Everything else about the package is in pyproject.toml."""

import os

from setuptools import Extension, setup


def kept() -> Extension:
    import epicscorelibs.path
    import pvxslibs
    import pvxslibs.path
    import pybind11

    return Extension(
        "epics_bridge.kept._pvxs",
        ["epics_bridge/kept/_pvxs.cpp"],
        include_dirs=[pybind11.get_include(), pvxslibs.path.include_path, epicscorelibs.path.include_path],
        # pvxs's own folder of libraries (pvxslibs.path names none); p4p loads the same ones first
        library_dirs=[os.path.join(os.path.dirname(pvxslibs.__file__), "lib"), epicscorelibs.path.lib_path],
        libraries=["pvxs", "Com"],
        # the expert API (re-executed puts); the wheels' libraries use the old C++ string ABI
        define_macros=[("PVXS_ENABLE_EXPERT_API", None), ("_GLIBCXX_USE_CXX11_ABI", "0")],
        extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
        language="c++",
        optional=True,
    )


setup(ext_modules=[kept()])
