#!/usr/bin/env python3
"""Of a plugin's own code, only its MICRO_PLUGIN entry point is exported.

usage: exports_test.py NM PLUGIN.so...

Plugins are built with hidden visibility (plugin_kwargs in the top meson.build), so their
classes, helpers, data and the trace library linked into one stay private: nothing of the
plugin (nor of micro::) can be bound to by another plugin or the program. Reads each plugin's
dynamic symbol table the way a user would check it, `nm -D --defined-only`, and accepts besides
micro_plugin_descriptor only what the header-only libraries mark default visibility themselves
(the std, Boost and nlohmann namespaces): Asio keeps per-thread state in such symbols and needs
them to be one per process, shared by libmicro's threads and the plugins' code
(docs/design.md, "Plugin symbols").
"""
import os
import re
import subprocess
import sys

ENTRY_POINT = "micro_plugin_descriptor"
# Further C entry points a plugin exports on purpose, each with its reason. Keep this short: a
# plugin's interface is its descriptor.
DELIBERATE = {
    "micro-registry-etcd.so": {
        "micro_registry_etcd_keepalive_statistics":
            "keep-alive counters the etcd tests read through dlsym (registry/etcd/lease_keeper.hpp)",
    },
}
# Itanium-mangled names whose outermost scope is std, __gnu_cxx, boost or nlohmann: functions and
# data (_ZN…, _ZNK…, _ZSt…), local statics (_ZZ…), guard variables (_ZGV…), typeinfo, names and
# vtables (_ZTI, _ZTS, _ZTV), thread-local wrappers (_ZTH, _ZTW), thunks (_ZThn…_, _ZTv…_).
LIBRARY = re.compile(
    r"^_Z(?:T[hv]n?\d+_(?:n?\d+_)?)?(?:GV|TI|TS|TV|TH|TW|GR)?Z?(?:N[KVrO]*)?"
    r"(?:St|S[abiosd]|9__gnu_cxx|5boost|8nlohmann)"
    r"|^boost_asio_")  # Asio's few extern "C" helpers (the thread entry function)


def exported(nm, plugin):
    output = subprocess.run([nm, "-D", "--defined-only", plugin], check=True, capture_output=True,
                            text=True).stdout
    # Lines are "ADDRESS TYPE NAME"; a name may carry a version (name@@VERSION).
    return [line.split()[-1].split("@")[0] for line in output.splitlines() if line.strip()]


def demangle(names):
    if not names:
        return []
    result = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    return result.stdout.splitlines() if result.returncode == 0 else names


def main():
    nm, plugins = sys.argv[1], sys.argv[2:]
    if not plugins:
        print("FAIL: no plugins given")
        return 1
    failures = 0
    for plugin in plugins:
        names = exported(nm, plugin)
        label = os.path.basename(plugin)
        deliberate = DELIBERATE.get(label, {})
        own = [name for name in names
               if name != ENTRY_POINT and name not in deliberate and not LIBRARY.match(name)]
        problems = []
        if ENTRY_POINT not in names:
            problems.append(f"it does not export {ENTRY_POINT}")
        if own:
            shown = demangle(own[:10])
            problems.append(f"it exports {len(own)} symbols of its own: " + "; ".join(shown) +
                            (" …" if len(own) > 10 else ""))
        if problems:
            failures += 1
            print(f"FAIL: {label}: " + ", and ".join(problems) +
                  "; expected only micro_plugin_descriptor (build plugins with "
                  "kwargs: plugin_kwargs, which hides everything else)")
        else:
            also = "".join(f"; also {name}: {why}" for name, why in deliberate.items()
                           if name in names)
            print(f"ok: {label} exports micro_plugin_descriptor and nothing else of its own "
                  f"({len(names) - 1 - len(deliberate)} default-visibility std/Boost/nlohmann "
                  f"symbols{also})")
    print(f"{len(plugins) - failures} of {len(plugins)} plugins export only their entry point")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
