"""What the doc generators say about the machine a figure was measured on.

One place for the CPU's name (for AMD with the core generation its family
implies) and the Highway target permdnn's kernels dispatch to, so every
generated doc names them the same way. Import it from a script in this
directory (`from machine import cpu_name`), or from an inline one after
`sys.path.insert(0, "scripts")`.
"""
import platform
import re
import subprocess


def cpu_name():
    """Model name; for AMD with the core generation its family implies, and
    for a name without a model number (a virtual machine's "Intel(R) Xeon(R)
    Processor") with the family, model and whether it has AMX."""
    name, family, model, flags = None, None, None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("cpu family") and family is None:
                    family = int(line.split(":", 1)[1])
                elif line.startswith("model") and not line.startswith("model name") and model is None:
                    model = int(line.split(":", 1)[1])
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except (OSError, ValueError):
        pass
    name = name or platform.processor() or "unknown CPU"
    zen = {23: "Zen/Zen 2", 25: "Zen 3/Zen 4", 26: "Zen 5"}.get(family)
    if name.startswith("AMD") and zen:
        name += f" (family {family}: {zen})"
    elif name.startswith("Intel") and name.endswith("Processor") and family is not None and model is not None:
        name += f" (family {family}, model {model}{', AMX' if 'amx_tile' in flags else ''})"
    return name


def permdnn_simd_target(permdnn, env=None):
    """The Highway target permdnn's kernels dispatch to (its bench header line)."""
    p = subprocess.run([permdnn, "bench", "--layers", "8x8", "--p", "8", "--batch", "1", "--act-density", "1",
                        "--threads", "1", "--format", "read", "--min-time", "0", "--reps", "1"],
                       env=env, capture_output=True, text=True)
    m = re.search(r"SIMD (\S+),", p.stdout)
    return m.group(1) if m else "unknown"
