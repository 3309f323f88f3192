"""The test suite; imported before any test module, so before gRPC is loaded."""

import os

# The tests fork only to exec (pg_ctl, serve children, tools). gRPC's fork handlers, run
# in a child forked while other threads call into gRPC, can crash it before it execs.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
