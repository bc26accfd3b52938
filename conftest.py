import os

# Notebooks run by nbmake (in a kernel subprocess that inherits this environment) and any loop that asks
# minivar.smoke() shrink to seconds under pytest. Set MINIVAR_SMOKE=0 to run them for real.
os.environ.setdefault("MINIVAR_SMOKE", "1")
