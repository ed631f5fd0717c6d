"""What the tests share, by concept: fixtures live in ``tests/conftest.py``, everything else
here, so that no test module imports another.

- ``waiting``: unique names and waiting on a condition with a deadline
- ``http``: a real uvicorn server in a thread, and a small client of the HTTP API
- ``definitions``: builders of workflow definitions
- ``processes``: ``orchy serve`` and ``redis-server`` child processes
- ``cluster``: a private Redis Cluster
- ``scale``: the scale-and-faults scenario of ``tests/test_scale.py``
- ``lua``: the harness of the Lua script tests
- ``cli``: the ``orchy`` command line as a subprocess
"""
